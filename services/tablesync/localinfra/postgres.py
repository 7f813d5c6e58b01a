"""A PostgreSQL server in a data directory of tablesync's own, on the port of the DSN.

The server files live in ``<state_dir>/postgres`` (``data/``, ``sock/``,
``postgres.log``). initdb and pg_ctl refuse to run as root, so root runs them as
the ``postgres`` user; when that user cannot reach the state directory (a clone
under /root), the files go to ``/var/lib/tablesync-local/<hash>/`` instead and
``<state_dir>/postgres.location`` records where.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

from tablesync.errors import InfraError
from tablesync.localinfra import procs
from tablesync.localinfra.model import ServerState, ServerStatus
from tablesync.localinfra.network import Endpoint, describe_port_holder, dsn_endpoint, port_answers
from tablesync.localinfra.paths import state_dir
from tablesync.settings import Settings, redact_dsn

__all__ = [
    "PgLayout",
    "connect_error",
    "down",
    "ensure_databases",
    "layout",
    "purge",
    "status",
    "up",
]

log = structlog.get_logger()

NAME = "postgres"
_SUPERUSER = "postgres"
_OS_USER = "postgres"
_LISTEN_HOST = "127.0.0.1"
_FALLBACK_ROOT = Path("/var/lib/tablesync-local")
_LOCATION_FILE = "postgres.location"
_DEBIAN_BINARIES = Path("/usr/lib/postgresql")
# Unix socket paths are limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100
_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
_PROBE_TIMEOUT_S = 2.0
_STOP_TIMEOUT_S = 60
_MAX_CONNECTIONS = 300


@dataclass(frozen=True)
class PgLayout:
    dsn: str
    endpoint: Endpoint
    state_dir: Path
    root: Path
    socket_dir: Path
    run_as: str | None
    """The OS user that runs initdb/pg_ctl; None for the current user."""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def location_file(self) -> Path:
        return self.state_dir / _LOCATION_FILE

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{_LISTEN_HOST}:{self.endpoint.port}/{database}"


class _Postmaster(NamedTuple):
    pid: int
    port: int


def layout(settings: Settings) -> PgLayout:
    state = state_dir(settings)
    run_as = _OS_USER if os.geteuid() == 0 else None
    root = _recorded_root(state) or _choose_root(state, run_as)
    return PgLayout(
        dsn=settings.database_dsn(),
        endpoint=dsn_endpoint(settings.database_dsn()),
        state_dir=state,
        root=root,
        socket_dir=_socket_dir(root, state),
        run_as=run_as,
    )


def _recorded_root(state: Path) -> Path | None:
    try:
        text = (state / _LOCATION_FILE).read_text().strip()
    except OSError:
        return None
    # A record left behind by a moved or copied clone points nowhere useful.
    return Path(text) if text and Path(text).is_dir() else None


def _choose_root(state: Path, run_as: str | None) -> Path:
    if run_as is None or _can_traverse(run_as, state):
        return state / "postgres"
    return _FALLBACK_ROOT / _short_hash(state)


def _can_traverse(user: str, directory: Path) -> bool:
    # `test -x` as that user follows every parent, so ACLs and modes all count.
    test = shutil.which("test") or "/usr/bin/test"
    result = procs.run_tool([test, "-x", str(directory)], user=user, cwd=Path("/"), timeout_s=10)
    return result.returncode == 0


def _socket_dir(root: Path, state: Path) -> Path:
    preferred = root / "sock"
    if len(str(preferred / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
        return preferred
    return Path("/tmp") / f"tablesync-pg-{_short_hash(state)}"


def _short_hash(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


async def up(settings: Settings) -> ServerStatus:
    """Make PostgreSQL accept the DSN: ours (started if needed) or an external server."""
    started = time.monotonic()
    endpoint = dsn_endpoint(settings.database_dsn())
    if not endpoint.is_local:
        return await _require_external(settings, endpoint, started)
    state_dir(settings).mkdir(parents=True, exist_ok=True)
    lay = await asyncio.to_thread(layout, settings)
    running = managed_postmaster(lay)
    if running is not None and running.port != lay.endpoint.port:
        log.info("postgres_port_changed", pid=running.pid, old=running.port, new=lay.endpoint.port)
        await _stop(lay, running.pid)
        running = None
    if running is None:
        foreign = await _foreign(lay, started)
        if foreign is not None:
            return _external_or_raise(foreign)
        pid = await _start(lay, settings.local.ready_timeout_s)
        detail = "started"
    else:
        pid, detail = running.pid, "already running"
    await _wait_ready(lay, pid, settings.local.ready_timeout_s)
    await ensure_databases(lay.admin_dsn(), _local_dsns(settings, lay.endpoint))
    return _running(lay, pid, started, detail)


async def status(settings: Settings) -> ServerStatus:
    started = time.monotonic()
    endpoint = dsn_endpoint(settings.database_dsn())
    if not endpoint.is_local:
        reason = await connect_error(settings.database_dsn(), _PROBE_TIMEOUT_S * 2)
        state = ServerState.EXTERNAL if reason is None else ServerState.STOPPED
        return _plain_status(endpoint, state, started, ready=reason is None, detail=reason or "")
    lay = await asyncio.to_thread(layout, settings)
    running = managed_postmaster(lay)
    if running is not None and running.port == lay.endpoint.port:
        reason = await connect_error(lay.admin_dsn(), _PROBE_TIMEOUT_S * 2)
        return _running(lay, running.pid, started, reason or "", ready=reason is None)
    foreign = await _foreign(lay, started)
    return foreign or _plain_status(endpoint, ServerState.STOPPED, started)


async def down(settings: Settings) -> ServerStatus:
    """Stop our server; an external one is reported and left alone."""
    started = time.monotonic()
    if not dsn_endpoint(settings.database_dsn()).is_local:
        return await status(settings)
    lay = await asyncio.to_thread(layout, settings)
    running = managed_postmaster(lay)
    if running is None:
        return await status(settings)
    await _stop(lay, running.pid)
    return ServerStatus(
        name=NAME,
        state=ServerState.STOPPED,
        address=str(lay.endpoint),
        pid=running.pid,
        elapsed_s=time.monotonic() - started,
        detail="stopped",
        log_path=lay.log_path,
        data_dir=lay.data_dir,
    )


def managed_postmaster(lay: PgLayout) -> _Postmaster | None:
    """Our postmaster's pid and port, from postmaster.pid, if it still runs."""
    try:
        lines = (lay.data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    pid, port = int(lines[0]), int(lines[3])
    if not procs.pid_alive(pid):
        return None
    command = procs.cmdline(pid)
    # A recycled pid belongs to some other program; /proc may be unreadable off Linux.
    if command and "postgres" not in command:
        return None
    return _Postmaster(pid, port)


async def _foreign(lay: PgLayout, started: float) -> ServerStatus | None:
    """What holds our port when it is not our server; None when the port is free."""
    endpoint = lay.endpoint
    if not await asyncio.to_thread(port_answers, endpoint):
        return None
    if not await speaks_postgres(endpoint):
        holder = describe_port_holder(endpoint.port)
        detail = f"port {endpoint.port} is taken by {holder}, which is not a PostgreSQL server"
        return _plain_status(endpoint, ServerState.PORT_TAKEN, started, detail=detail)
    reason = await connect_error(lay.dsn, _PROBE_TIMEOUT_S * 2)
    if reason is not None:
        detail = (
            f"a PostgreSQL server not managed by tablesync answers on port {endpoint.port} "
            f"but refuses {redact_dsn(lay.dsn)}: {reason}"
        )
        return _plain_status(endpoint, ServerState.PORT_TAKEN, started, detail=detail)
    return _plain_status(
        endpoint, ServerState.EXTERNAL, started, ready=True, detail="not managed by tablesync"
    )


def _external_or_raise(found: ServerStatus) -> ServerStatus:
    if found.state is ServerState.EXTERNAL:
        log.info("postgres_external", address=found.address)
        return found
    raise InfraError(
        f"postgres: {found.detail}; free the port or point TABLESYNC_DATABASE_URL elsewhere"
    )


async def _require_external(settings: Settings, endpoint: Endpoint, started: float) -> ServerStatus:
    reason = await connect_error(settings.database_dsn(), _PROBE_TIMEOUT_S * 5)
    if reason is None:
        log.info("postgres_external", address=str(endpoint))
        return _plain_status(
            endpoint, ServerState.EXTERNAL, started, ready=True, detail="not managed by tablesync"
        )
    where = endpoint.host or "a Unix socket"
    raise InfraError(
        f"postgres: {redact_dsn(settings.database_dsn())} is not usable ({reason}), and "
        f"{where} is not a TCP address on this machine, so tablesync cannot start a server there"
    )


async def _start(lay: PgLayout, timeout_s: float) -> int:
    bindir = await asyncio.to_thread(require_binaries, lay.data_dir)
    await asyncio.to_thread(_prepare_root, lay)
    await asyncio.to_thread(_initdb, bindir, lay)
    # The default max_connections=100 runs out when the test suites of several
    # checkouts on one machine share this server (each holds pools of its own).
    options = (
        f"-c listen_addresses={_LISTEN_HOST} -p {lay.endpoint.port} "
        f"-c max_connections={_MAX_CONNECTIONS} "
        f"-k {shlex.quote(str(lay.socket_dir))}"
    )
    argv = [
        str(bindir / "pg_ctl"),
        "start",
        "-D",
        str(lay.data_dir),
        "-l",
        str(lay.log_path),
        "-w",
        "-t",
        str(max(1, int(timeout_s))),
        "-o",
        options,
    ]
    result = await asyncio.to_thread(
        procs.run_tool, argv, user=lay.run_as, cwd=lay.root, timeout_s=timeout_s + 10
    )
    running = managed_postmaster(lay)
    if result.returncode != 0 or running is None:
        if running is not None:
            await _stop(lay, running.pid)
        raise InfraError(
            f"postgres: pg_ctl start failed (exit {result.returncode}): "
            + (result.stdout + result.stderr).strip()
            + procs.log_tail(lay.log_path)
        )
    log.info("postgres_started", pid=running.pid, port=running.port, data_dir=str(lay.data_dir))
    return running.pid


def _prepare_root(lay: PgLayout) -> None:
    for directory in (lay.root, lay.socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        if lay.run_as is not None:
            shutil.chown(directory, lay.run_as, procs.primary_group(lay.run_as))
    lay.location_file.write_text(f"{lay.root}\n")


def _initdb(bindir: Path, lay: PgLayout) -> None:
    if (lay.data_dir / "PG_VERSION").is_file():
        return
    # A data directory without PG_VERSION is what an interrupted initdb leaves.
    shutil.rmtree(lay.data_dir, ignore_errors=True)
    argv = [
        str(bindir / "initdb"),
        "-D",
        str(lay.data_dir),
        "-U",
        _SUPERUSER,
        "-E",
        "UTF8",
        f"--locale={_locale()}",
        "--auth=trust",
        # Development data: a crash right after initdb costs a re-init, not real data.
        "--no-sync",
    ]
    result = procs.run_tool(argv, user=lay.run_as, cwd=lay.root, timeout_s=300)
    if result.returncode != 0:
        raise InfraError(
            f"postgres: initdb failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr).strip()
        )
    log.info("postgres_initialised", data_dir=str(lay.data_dir))


def _locale() -> str:
    # C.UTF-8 keeps byte-order collation but knows the case of non-ASCII letters.
    return "C.UTF-8" if Path("/usr/lib/locale/C.utf8").exists() else "C"


def require_binaries(data_dir: Path) -> Path:
    """The bin directory of the PostgreSQL server, installed with apt-get when missing."""
    found = find_binaries(data_dir)
    if found is not None:
        return found
    _install_server()
    found = find_binaries(data_dir)
    if found is None:
        raise InfraError("postgres: apt-get installed postgresql but no initdb/pg_ctl was found")
    return found


def find_binaries(data_dir: Path) -> Path | None:
    """The newest server's bin directory, or the one of the version ``data_dir`` was made with."""
    installed = _debian_bindirs()
    try:
        made_with = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        made_with = None
    if made_with is not None and installed and made_with not in installed:
        raise InfraError(
            f"postgres: {data_dir} was made by PostgreSQL {made_with}, but only "
            f"{', '.join(sorted(installed))} is installed; install postgresql-{made_with} "
            f"or delete {data_dir.parent} to start afresh"
        )
    if made_with is not None and made_with in installed:
        return installed[made_with]
    if installed:
        return installed[max(installed, key=_version_key)]
    on_path = shutil.which("pg_ctl")
    if on_path is not None and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    return None


def _debian_bindirs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    if _DEBIAN_BINARIES.is_dir():
        for bindir in _DEBIAN_BINARIES.glob("*/bin"):
            if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
                found[bindir.parent.name] = bindir
    return found


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _install_server() -> None:
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise InfraError(
            "postgres: no PostgreSQL server binaries found (initdb, pg_ctl); install them "
            "(Debian/Ubuntu: sudo apt-get install -y postgresql) or point "
            "TABLESYNC_DATABASE_URL at an existing server"
        )
    log.info("postgres_installing", package="postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "postgresql"]):
        result = procs.run_tool(argv, timeout_s=900, env=env)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-20:]
            raise InfraError(
                f"postgres: {' '.join(argv[1:])} failed (exit {result.returncode}):\n"
                + "\n".join(output)
            )


async def _wait_ready(lay: PgLayout, pid: int, timeout_s: float) -> None:
    """Wait until the server accepts a connection, or fail with its log's tail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (reason := await connect_error(lay.admin_dsn(), _PROBE_TIMEOUT_S)) is not None:
        if not procs.pid_alive(pid):
            raise InfraError(
                f"postgres: the server (pid {pid}) exited before it accepted connections"
                + procs.log_tail(lay.log_path)
            )
        if loop.time() >= deadline:
            raise InfraError(
                f"postgres: no connection on {lay.endpoint} within {timeout_s:.0f}s ({reason})"
                + procs.log_tail(lay.log_path)
            )
        await asyncio.sleep(0.1)


async def connect_error(dsn: str, timeout_s: float) -> str | None:
    """None when ``dsn`` accepts a connection, else why not (without credentials)."""
    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}".replace(dsn, redact_dsn(dsn))
    await connection.close()
    return None


async def speaks_postgres(endpoint: Endpoint, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether ``endpoint`` answers an SSLRequest the way a PostgreSQL server does."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            try:
                writer.write(_SSL_REQUEST)
                await writer.drain()
                return await reader.readexactly(1) in (b"S", b"N")
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


def _local_dsns(settings: Settings, endpoint: Endpoint) -> list[str]:
    """The configured DSNs that point at the server on ``endpoint``."""
    candidates = [
        settings.database_dsn(),
        settings.emulator_dsn("bc"),
        settings.emulator_dsn("dataverse"),
    ]
    return [
        dsn
        for dsn in candidates
        if dsn_endpoint(dsn).is_local and dsn_endpoint(dsn).port == endpoint.port
    ]


async def ensure_databases(admin_dsn: str, dsns: list[str]) -> None:
    """Create the roles and databases ``dsns`` name on the server ``admin_dsn`` reaches."""
    connection = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        for dsn in dsns:
            user, password, database = _dsn_identity(dsn)
            if user != _SUPERUSER:
                await _ensure_role(connection, user, password)
            await _ensure_database(connection, database, user)
    finally:
        await connection.close()


def _dsn_identity(dsn: str) -> tuple[str, str | None, str]:
    parts = urlsplit(dsn)
    user = unquote(parts.username) if parts.username else _SUPERUSER
    password = unquote(parts.password) if parts.password else None
    database = unquote(parts.path.lstrip("/")) or user
    return user, password, database


async def _ensure_role(connection: asyncpg.Connection, user: str, password: str | None) -> None:
    if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
        return
    secret = "" if password is None else f" PASSWORD {_literal(password)}"
    await connection.execute(f"CREATE ROLE {_ident(user)} LOGIN{secret}")
    log.info("postgres_role_created", role=user)


async def _ensure_database(connection: asyncpg.Connection, database: str, owner: str) -> None:
    if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        return
    try:
        await connection.execute(f"CREATE DATABASE {_ident(database)} OWNER {_ident(owner)}")
    except asyncpg.DuplicateDatabaseError:
        return
    log.info("postgres_database_created", database=database)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _stop(lay: PgLayout, pid: int) -> None:
    """pg_ctl stop -m fast; signals when pg_ctl cannot do it."""
    log.info("postgres_stopping", pid=pid)
    bindir = find_binaries(lay.data_dir)
    if bindir is not None:
        argv = [str(bindir / "pg_ctl"), "stop", "-D", str(lay.data_dir), "-m", "fast", "-w"]
        argv += ["-t", str(_STOP_TIMEOUT_S)]
        await asyncio.to_thread(
            procs.run_tool, argv, user=lay.run_as, cwd=lay.root, timeout_s=_STOP_TIMEOUT_S + 10
        )
    else:
        procs.send_signal(pid, signal.SIGINT)
    if await procs.wait_gone(pid, 10.0):
        return
    # SIGQUIT is PostgreSQL's immediate shutdown.
    procs.send_signal(pid, signal.SIGQUIT)
    if not await procs.wait_gone(pid, 10.0):
        procs.send_signal(pid, signal.SIGKILL)
        if not await procs.wait_gone(pid, 10.0):
            raise InfraError(f"postgres: the server (pid {pid}) survived SIGKILL")


def _running(
    lay: PgLayout, pid: int, started: float, detail: str, *, ready: bool = True
) -> ServerStatus:
    return ServerStatus(
        name=NAME,
        state=ServerState.RUNNING,
        address=str(lay.endpoint),
        ready=ready,
        pid=pid,
        elapsed_s=time.monotonic() - started,
        detail=detail,
        log_path=lay.log_path,
        data_dir=lay.data_dir,
    )


def _plain_status(
    endpoint: Endpoint,
    state: ServerState,
    started: float,
    *,
    ready: bool = False,
    detail: str = "",
) -> ServerStatus:
    return ServerStatus(
        name=NAME,
        state=state,
        address=str(endpoint) if endpoint.host else "unix socket",
        ready=ready,
        elapsed_s=time.monotonic() - started,
        detail=detail,
    )


async def purge(settings: Settings) -> None:
    """Stop our server and delete its data directory, socket directory and log."""
    await down(settings)
    if not dsn_endpoint(settings.database_dsn()).is_local:
        return
    lay = await asyncio.to_thread(layout, settings)
    for directory in (lay.socket_dir, lay.root):
        await asyncio.to_thread(shutil.rmtree, directory, True)
    lay.location_file.unlink(missing_ok=True)
