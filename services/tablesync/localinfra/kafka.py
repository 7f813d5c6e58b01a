"""A single-node Apache Kafka (KRaft) from Maven Central's jars, run by tablesync.

Layout under ``<state_dir>/kafka``: ``server.properties`` (rendered from
``kafka_files/server.properties``), ``data/``, ``kafka.log`` and ``kafka.pid``.
The jars live in ``~/.cache/tablesync/kafka-<version>/``, shared by every checkout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.errors import InfraError
from tablesync.localinfra import procs
from tablesync.localinfra.locks import file_lock
from tablesync.localinfra.model import ServerState, ServerStatus
from tablesync.localinfra.network import (
    Endpoint,
    bootstrap_endpoint,
    describe_port_holder,
    port_answers,
    port_free,
)
from tablesync.localinfra.paths import cache_root, kafka_files, state_dir
from tablesync.settings import Settings

__all__ = ["KafkaLayout", "broker_ready", "down", "layout", "purge", "status", "up"]

log = structlog.get_logger()

NAME = "kafka"
_LISTEN_HOST = "127.0.0.1"
_JAR_MARKER = ".complete"
_STOP_GRACE_S = 30.0
_PROBE_TIMEOUT_S = 2.0
_API_VERSIONS_KEY = 18
_CORRELATION_ID = 0x7AB1E5
_CLIENT_ID = b"tablesync-localinfra"


@dataclass(frozen=True)
class KafkaLayout:
    bootstrap: str
    kafka: KafkaConnection
    """``bootstrap`` with the security settings: how an external broker is reached."""
    endpoint: Endpoint
    controller_port: int
    home: Path
    heap: str

    @property
    def props_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "kafka.pid"


def layout(settings: Settings, controller_port: int | None = None) -> KafkaLayout:
    endpoint = bootstrap_endpoint(settings.kafka_bootstrap_servers)
    return KafkaLayout(
        bootstrap=settings.kafka_bootstrap_servers,
        kafka=KafkaConnection.from_settings(settings),
        endpoint=endpoint,
        controller_port=controller_port or endpoint.port + 1,
        home=state_dir(settings) / "kafka",
        heap=settings.local.kafka_heap,
    )


async def up(settings: Settings, controller_port: int | None = None) -> ServerStatus:
    """Make a broker answer on ``kafka_bootstrap_servers``: ours, or an external one."""
    started = time.monotonic()
    lay = layout(settings, controller_port)
    if not lay.endpoint.is_local:
        return await _require_external(lay, started)
    pid = managed_pid(lay)
    if pid is not None and _config_current(lay):
        await wait_ready(lay, pid, settings.local.ready_timeout_s)
        return _running(lay, pid, started, "already running")
    if pid is not None:
        log.info("kafka_config_changed", pid=pid, port=lay.endpoint.port)
        await _stop(lay, pid)
    foreign = await _foreign(lay, started)
    if foreign is not None:
        return _external_or_raise(foreign)
    pid = await _start(lay)
    try:
        await wait_ready(lay, pid, settings.local.ready_timeout_s)
    except InfraError:
        await _stop(lay, pid)
        raise
    return _running(lay, pid, started, "started")


async def status(settings: Settings) -> ServerStatus:
    started = time.monotonic()
    lay = layout(settings)
    if not lay.endpoint.is_local:
        ready = await broker_ready(lay.kafka, _PROBE_TIMEOUT_S * 2)
        state = ServerState.EXTERNAL if ready else ServerState.STOPPED
        return _status(lay, state, started, ready=ready, detail="not managed by tablesync")
    pid = managed_pid(lay)
    if pid is not None:
        ready = await broker_ready(_ours(lay), _PROBE_TIMEOUT_S * 2)
        return _running(lay, pid, started, "" if ready else "not answering yet", ready=ready)
    foreign = await _foreign(lay, started)
    return foreign or _status(lay, ServerState.STOPPED, started)


async def down(settings: Settings) -> ServerStatus:
    """Stop our broker; an external one is reported and left alone."""
    started = time.monotonic()
    lay = layout(settings)
    pid = managed_pid(lay) if lay.endpoint.is_local else None
    if pid is None:
        lay.pid_path.unlink(missing_ok=True)
        return await status(settings)
    await _stop(lay, pid)
    return _status(lay, ServerState.STOPPED, started, pid=pid, detail="stopped")


def managed_pid(lay: KafkaLayout) -> int | None:
    """The pid of the broker started for this state directory, if it still runs."""
    pid = procs.read_pid_file(lay.pid_path)
    if pid is None or not procs.pid_alive(pid):
        return None
    command = procs.cmdline(pid)
    # A recycled pid belongs to some other program; /proc may be unreadable off Linux.
    if command and ("kafka.Kafka" not in command or str(lay.props_path) not in command):
        return None
    return pid


def _config_current(lay: KafkaLayout) -> bool:
    try:
        return lay.props_path.read_text() == render_properties(lay)
    except OSError:
        return False


async def _foreign(lay: KafkaLayout, started: float) -> ServerStatus | None:
    """What holds our port when it is not our broker; None when the port is free."""
    if not await asyncio.to_thread(port_answers, lay.endpoint):
        return None
    port = lay.endpoint.port
    if not await speaks_kafka(lay.endpoint):
        holder = describe_port_holder(port)
        detail = f"port {port} is taken by {holder}, which is not a Kafka broker"
        return _status(lay, ServerState.PORT_TAKEN, started, detail=detail)
    if not await broker_ready(lay.kafka, _PROBE_TIMEOUT_S * 2):
        detail = (
            f"a Kafka broker not managed by tablesync holds port {port} "
            "but does not answer metadata requests"
        )
        return _status(lay, ServerState.PORT_TAKEN, started, detail=detail)
    return _status(
        lay, ServerState.EXTERNAL, started, ready=True, detail="not managed by tablesync"
    )


def _external_or_raise(found: ServerStatus) -> ServerStatus:
    if found.state is ServerState.EXTERNAL:
        log.info("kafka_external", address=found.address)
        return found
    raise InfraError(
        f"kafka: {found.detail}; free the port or point TABLESYNC_KAFKA_BOOTSTRAP_SERVERS elsewhere"
    )


async def _require_external(lay: KafkaLayout, started: float) -> ServerStatus:
    timeout_s = _PROBE_TIMEOUT_S * 5
    if await broker_ready(lay.kafka, timeout_s):
        log.info("kafka_external", address=str(lay.endpoint))
        return _status(
            lay, ServerState.EXTERNAL, started, ready=True, detail="not managed by tablesync"
        )
    raise InfraError(
        f"kafka: no broker answered at {lay.bootstrap} within {timeout_s:.0f}s, and "
        f"{lay.endpoint.host} is not this machine, so tablesync cannot start one there"
    )


async def _start(lay: KafkaLayout) -> int:
    if not port_free(_LISTEN_HOST, lay.controller_port):
        holder = describe_port_holder(lay.controller_port)
        raise InfraError(
            f"kafka: controller port {lay.controller_port} is taken by {holder}; "
            "free it or choose another controller port"
        )
    java = require_java()
    jars = await asyncio.to_thread(resolve_jars)
    log4j = kafka_files() / "log4j.properties"
    lay.home.mkdir(parents=True, exist_ok=True)
    lay.props_path.write_text(render_properties(lay))
    await asyncio.to_thread(format_storage, java, jars, log4j, lay)
    argv = [
        java,
        f"-Xmx{lay.heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        *_log_options(log4j),
        "-cp",
        f"{jars}/*",
        "kafka.Kafka",
        str(lay.props_path),
    ]
    pid = procs.spawn_detached(argv, lay.log_path, os.environ)
    procs.write_pid_file(lay.pid_path, pid)
    log.info("kafka_started", pid=pid, port=lay.endpoint.port, log=str(lay.log_path))
    return pid


def _log_options(log4j: Path) -> list[str]:
    # Kafka 4 ships log4j2 next to reload4j; its status logger would complain on
    # every start that it found no log4j2 configuration.
    return [f"-Dlog4j.configuration=file:{log4j}", "-Dlog4j2.statusLoggerLevel=OFF"]


def render_properties(lay: KafkaLayout) -> str:
    template = Template((kafka_files() / "server.properties").read_text())
    try:
        return template.substitute(
            host=_LISTEN_HOST,
            port=lay.endpoint.port,
            controller_port=lay.controller_port,
            data_dir=lay.data_dir,
        )
    except (KeyError, ValueError) as exc:
        raise InfraError(f"kafka_files/server.properties has a bad placeholder: {exc}") from exc


def require_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise InfraError(
            "kafka: Java is not installed (Kafka needs a Java 17+ runtime); "
            "install it, e.g. apt-get install -y openjdk-17-jre-headless"
        )
    return found


def require_maven() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise InfraError(
            "kafka: Maven is not installed (it fetches Kafka's jars from Maven Central); "
            "install it, e.g. apt-get install -y maven"
        )
    return found


def format_storage(java: str, jars: Path, log4j: Path, lay: KafkaLayout) -> None:
    """Format the KRaft log directory once; a directory without meta.properties is redone."""
    if (lay.data_dir / "meta.properties").is_file():
        return
    shutil.rmtree(lay.data_dir, ignore_errors=True)
    tool = [java, *_log_options(log4j), "-cp", f"{jars}/*", "kafka.tools.StorageTool"]
    cluster_id = _run_storage_tool("random-uuid", [*tool, "random-uuid"]).split()[-1]
    _run_storage_tool("format", [*tool, "format", "-t", cluster_id, "-c", str(lay.props_path)])
    log.info("kafka_storage_formatted", data_dir=str(lay.data_dir), cluster_id=cluster_id)


def _run_storage_tool(command: str, argv: list[str]) -> str:
    result = procs.run_tool(argv, timeout_s=120)
    if result.returncode != 0 or not result.stdout.strip():
        raise InfraError(
            f"kafka: StorageTool {command} failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr).strip()
        )
    return result.stdout


def kafka_version(pom: Path) -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if match is None:
        raise InfraError(f"{pom} does not declare <kafka.version>")
    return match.group(1)


def resolve_jars() -> Path:
    """The directory of Kafka's runtime jars, fetched with Maven on first use."""
    pom = kafka_files() / "pom.xml"
    version = kafka_version(pom)
    target = cache_root() / f"kafka-{version}"
    fingerprint = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _jars_complete(target, fingerprint):
        return target
    with file_lock(cache_root() / f"kafka-{version}.lock"):
        if not _jars_complete(target, fingerprint):
            _download_jars(pom, version, target, fingerprint)
    return target


def _jars_complete(target: Path, fingerprint: str) -> bool:
    try:
        return (target / _JAR_MARKER).read_text().strip() == fingerprint
    except OSError:
        return False


def _download_jars(pom: Path, version: str, target: Path, fingerprint: str) -> None:
    mvn = require_maven()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    log.info("kafka_jars_resolving", version=version, into=str(target))
    started = time.monotonic()
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={target}",
        "-DincludeScope=runtime",
    ]
    result = procs.run_tool(argv, timeout_s=900)
    if result.returncode != 0 or not any(target.glob("kafka_2.13-*.jar")):
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise InfraError(
            f"kafka: resolving the Kafka {version} jars from Maven Central failed "
            f"(mvn exit {result.returncode}):\n" + "\n".join(output)
        )
    # Written last: an interrupted download leaves no marker and is redone.
    (target / _JAR_MARKER).write_text(fingerprint + "\n")
    log.info("kafka_jars_resolved", version=version, seconds=round(time.monotonic() - started, 1))


async def wait_ready(lay: KafkaLayout, pid: int, timeout_s: float) -> None:
    """Wait until the broker answers a metadata request, or fail with its log's tail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await broker_ready(_ours(lay), _PROBE_TIMEOUT_S):
        if not procs.pid_alive(pid):
            code = procs.exit_code(pid)
            how = "" if code is None else f" with code {code}"
            raise InfraError(
                f"kafka: the broker (pid {pid}) exited{how} before it was ready"
                + procs.log_tail(lay.log_path)
            )
        if loop.time() >= deadline:
            raise InfraError(
                f"kafka: no answer to a metadata request on {lay.endpoint} within {timeout_s:.0f}s"
                + procs.log_tail(lay.log_path)
            )
        await asyncio.sleep(0.2)


def _ours(lay: KafkaLayout) -> KafkaConnection:
    # The broker tablesync starts has one PLAINTEXT listener (localinfra/kafka_files).
    return KafkaConnection(str(lay.endpoint))


async def broker_ready(kafka: KafkaConnection, timeout_s: float) -> bool:
    """Whether a broker at ``kafka`` answers a metadata request listing a broker."""
    first = bootstrap_endpoint(kafka.bootstrap_servers)
    # A refused connection is cheap to detect and keeps aiokafka's error log quiet.
    if first.is_local and not await asyncio.to_thread(port_answers, first):
        return False
    admin = AIOKafkaAdminClient(
        **kafka.client_kwargs(),
        client_id=_CLIENT_ID.decode(),
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


async def speaks_kafka(endpoint: Endpoint, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether ``endpoint`` answers an ApiVersions request like a Kafka broker."""
    header = (
        struct.pack(">hhih", _API_VERSIONS_KEY, 0, _CORRELATION_ID, len(_CLIENT_ID)) + _CLIENT_ID
    )
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            try:
                writer.write(struct.pack(">i", len(header)) + header)
                await writer.drain()
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                if not 4 <= size <= 1 << 20:
                    return False
                (correlation,) = struct.unpack(">i", await reader.readexactly(4))
                return bool(correlation == _CORRELATION_ID)
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


async def _stop(lay: KafkaLayout, pid: int) -> None:
    log.info("kafka_stopping", pid=pid)
    await procs.terminate_group(pid, _STOP_GRACE_S)
    lay.pid_path.unlink(missing_ok=True)


def _running(
    lay: KafkaLayout, pid: int, started: float, detail: str, *, ready: bool = True
) -> ServerStatus:
    return _status(lay, ServerState.RUNNING, started, ready=ready, pid=pid, detail=detail)


def _status(
    lay: KafkaLayout,
    state: ServerState,
    started: float,
    *,
    ready: bool = False,
    pid: int | None = None,
    detail: str = "",
) -> ServerStatus:
    managed = state is ServerState.RUNNING or (state is ServerState.STOPPED and pid is not None)
    return ServerStatus(
        name=NAME,
        state=state,
        address=str(lay.endpoint),
        ready=ready,
        pid=pid,
        elapsed_s=time.monotonic() - started,
        detail=detail,
        log_path=lay.log_path if managed else None,
        data_dir=lay.data_dir if managed else None,
    )


async def purge(settings: Settings) -> None:
    """Stop our broker and delete its data, configuration and log."""
    await down(settings)
    lay = layout(settings)
    if lay.endpoint.is_local:
        await asyncio.to_thread(shutil.rmtree, lay.home, True)
