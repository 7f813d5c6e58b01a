"""Session fixtures shared by every test suite.

``infra`` gives integration tests real Kafka and PostgreSQL servers: containers
when a Docker engine answers, otherwise the local servers of
``tablesync.localinfra`` (left running afterwards; ``make infra-down`` stops them).
With ``TABLESYNC_FORBID_SKIPS=1`` every skipped test counts as a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from tablesync import localinfra
from tablesync.adapters.kafka import KafkaConnection
from tablesync.localinfra.kafka import broker_ready
from tablesync.localinfra.network import free_ports, port_free
from tablesync.localinfra.postgres import ensure_databases
from tablesync.settings import Settings, with_database

FORBID_SKIPS_ENV = "TABLESYNC_FORBID_SKIPS"
KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:17"
CONTAINER_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class InfraEndpoints:
    kafka_bootstrap_servers: str
    database_dsn: str


@pytest.fixture(scope="session", autouse=True)
def loggers_never_cached() -> Iterator[None]:
    """In-process CLI runs (typer's CliRunner) configure structlog as the product
    does, caching each logger on its first use; a cached logger ignores
    ``capture_logs`` in every later test of the process, so a test reading its
    logs would pass or fail by which tests ran before it in the same worker."""
    configure = structlog.configure

    def uncached(*args: Any, **kwargs: Any) -> None:
        kwargs["cache_logger_on_first_use"] = False
        configure(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structlog, "configure", uncached)
        yield


@pytest.fixture(scope="session")
def infra() -> Iterator[InfraEndpoints]:
    if _docker_answers():
        yield from _containers()
    else:
        yield _local_servers()


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _local_servers() -> InfraEndpoints:
    settings = Settings()
    localinfra.up(settings)
    return InfraEndpoints(settings.kafka_bootstrap_servers, settings.database_dsn())


def _containers() -> Iterator[InfraEndpoints]:
    # testcontainers is the optional `docker` extra: imported only when Docker answers.
    from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415

    host = DockerClient().host()
    kafka_port = _free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, kafka_port)
        .with_envs(**_kafka_container_env(host, kafka_port))
    )
    postgres = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname="tablesync", driver=None
    )
    with kafka, postgres:
        bootstrap = f"{host}:{kafka_port}"
        dsn = postgres.get_connection_url()
        asyncio.run(_prepare_containers(bootstrap, dsn))
        yield InfraEndpoints(bootstrap, dsn)


def _kafka_container_env(host: str, port: int) -> dict[str, str]:
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "6",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "6",
    }


async def _prepare_containers(bootstrap: str, dsn: str) -> None:
    deadline = time.monotonic() + CONTAINER_READY_TIMEOUT_S
    while not await broker_ready(KafkaConnection(bootstrap), 5.0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Kafka container at {bootstrap} never answered metadata")
        await asyncio.sleep(0.5)
    emulator_dsns = [with_database(dsn, f"tablesync_{side}") for side in ("bc", "dataverse")]
    await ensure_databases(with_database(dsn, "postgres"), [dsn, *emulator_dsns])


_CHECKOUT_TAG = hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:8]


def worker_database(name: str) -> str:
    """``name`` made this checkout's and this pytest-xdist worker's own
    (``name_1a2b3c4d_gw0``), for the databases that session and module fixtures
    reset at will: the suites of other checkouts on the shared server, and the other
    worker, would otherwise wipe each other's rows. A bounded set of names per
    checkout, so there is nothing to drop afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{name}_{_CHECKOUT_TAG}_{worker}"


def _free_port() -> int:
    return unused_ports(1)[0]


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 20_000


def unused_ports(count: int) -> list[int]:
    """Distinct loopback ports nothing listens on, for servers a test starts later.

    A port the kernel hands out for port 0 is one of its ephemeral ports, which any
    outgoing connection on this busy machine may take before the server gets to
    bind it. Ports below the ephemeral range are never handed out that way."""
    try:
        first_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 0
    if first_ephemeral - _LOWEST_PORT < 100 * count:
        return free_ports(count)
    candidates = random.sample(range(_LOWEST_PORT, first_ephemeral), k=min(1000, count * 100))
    ports = [port for port in candidates if port_free("127.0.0.1", port)][:count]
    if len(ports) < count:
        raise RuntimeError(f"no {count} free ports between {_LOWEST_PORT} and {first_ephemeral}")
    return ports


def _skips_forbidden() -> bool:
    return os.environ.get(FORBID_SKIPS_ENV) == "1"


def _forbidden_skip_message(longrepr: object) -> str:
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    return f"skipped while {FORBID_SKIPS_ENV}=1: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # An expected failure (xfail) is reported as skipped too, but it ran.
    if _skips_forbidden() and report.skipped and not hasattr(report, "wasxfail"):
        report.longrepr = _forbidden_skip_message(report.longrepr)
        report.outcome = "failed"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if _skips_forbidden() and report.skipped:
        report.longrepr = _forbidden_skip_message(report.longrepr)
        report.outcome = "failed"
    return report


# With pytest-xdist (`-n 2`, see pyproject's addopts) each unit of work below runs
# whole on one worker, in collection order: a test file, so a module's fixtures (a
# stack of services, emulators on their databases) start once; and the fault suite
# as one, because its files share one session pipeline on servers of its own, and
# its later tests read the figures of the chaos run before them.
_ONE_UNIT_DIRS = ("tests/faults/",)
# The longest units, handed out first: the calm simulation is one CPU-bound test of
# many minutes and the fault suite one unit of several, so the other worker works
# through the rest beside them rather than one of them running alone at the end.
_FIRST_UNITS = ("tests/simulation/test_simulation.py", "tests/faults/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    # Only xdist calls this hook, so xdist is importable here.
    from xdist.scheduler import LoadFileScheduling  # noqa: PLC0415

    class _FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((d for d in _ONE_UNIT_DIRS if path.startswith(d)), path)

        def _assign_work_unit(self, node: Any) -> None:
            for unit in reversed(_FIRST_UNITS):
                if unit in self.workqueue:
                    self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return _FileScheduling(config, log)
