"""A second, independent local infrastructure on random ports: up, status, down.

Runs real servers (a few seconds each) in a temporary state directory, so it
never disturbs the default instance other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tablesync import localinfra
from tablesync.errors import InfraError
from tablesync.localinfra import InfraStatus, ServerState
from tablesync.settings import LocalInfraSettings, Settings
from tests.conftest import unused_ports

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Instance:
    settings: Settings
    kafka_port: int
    controller_port: int
    postgres_port: int

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.kafka_port, self.controller_port, self.postgres_port)


def _settings(state_dir: Path, kafka_port: int, postgres_port: int) -> Settings:
    return Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        database_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/tablesync_it",
        local=LocalInfraSettings(state_dir=state_dir, ready_timeout_s=90.0),
    )


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    kafka_port, controller_port, postgres_port = unused_ports(3)
    settings = _settings(tmp_path / "state", kafka_port, postgres_port)
    yield Instance(settings, kafka_port, controller_port, postgres_port)
    # Also deletes a data directory placed outside tmp_path for the postgres user.
    localinfra.purge(settings)


def _up(instance: Instance) -> InfraStatus:
    return localinfra.up(instance.settings, kafka_controller_port=instance.controller_port)


def test_up_status_down_lifecycle(instance: Instance, tmp_path: Path) -> None:
    first = _up(instance)
    _assert_running(first)
    assert (first.kafka.detail, first.postgres.detail) == ("started", "started")

    # Up again only checks the running servers: neither is started or stopped.
    again = _up(instance)
    assert (again.kafka.detail, again.postgres.detail) == ("already running", "already running")
    assert (again.kafka.pid, again.postgres.pid) == (first.kafka.pid, first.postgres.pid)

    _assert_running(localinfra.status(instance.settings))
    asyncio.run(_assert_broker_answers(instance))
    asyncio.run(_assert_databases_exist(instance))
    _assert_seen_as_external(instance, tmp_path / "other-state")

    instance_pids = _instance_pids(first)
    localinfra.down(instance.settings)
    _assert_nothing_left(instance, instance_pids)

    localinfra.down(instance.settings)
    after = localinfra.status(instance.settings)
    assert (after.kafka.state, after.postgres.state) == (ServerState.STOPPED, ServerState.STOPPED)
    assert not after.usable


def test_ports_held_by_plain_sockets_are_reported(tmp_path: Path) -> None:
    with _listening_socket() as kafka_port, _listening_socket() as postgres_port:
        settings = _settings(tmp_path / "state", kafka_port, postgres_port)
        with pytest.raises(InfraError) as caught:
            localinfra.up(settings)
        message = str(caught.value)
        assert f"port {kafka_port} is taken by pid" in message
        assert "not a Kafka broker" in message
        assert f"port {postgres_port} is taken by pid" in message
        assert "not a PostgreSQL server" in message

        report = localinfra.status(settings)
        assert report.kafka.state is ServerState.PORT_TAKEN
        assert report.postgres.state is ServerState.PORT_TAKEN
        assert not report.usable


def test_taken_controller_port_is_reported(tmp_path: Path) -> None:
    (kafka_port,) = unused_ports(1)
    # The PostgreSQL port is taken too, so that this test starts no server at all.
    with _listening_socket() as controller_port, _listening_socket() as postgres_port:
        settings = _settings(tmp_path / "state", kafka_port, postgres_port)
        with pytest.raises(InfraError, match=f"controller port {controller_port} is taken"):
            localinfra.up(settings, kafka_controller_port=controller_port)
    assert _refuses(kafka_port)


def _assert_running(report: InfraStatus) -> None:
    for server in report.servers:
        assert server.state is ServerState.RUNNING, server
        assert server.ready, server
        assert server.pid is not None
    assert report.usable


async def _assert_broker_answers(instance: Instance) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=instance.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert [broker["port"] for broker in cluster["brokers"]] == [instance.kafka_port]


async def _assert_databases_exist(instance: Instance) -> None:
    settings = instance.settings
    for dsn, database in (
        (settings.database_dsn(), "tablesync_it"),
        (settings.emulator_dsn("bc"), "tablesync_bc"),
        (settings.emulator_dsn("dataverse"), "tablesync_dataverse"),
    ):
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            assert await connection.fetchval("SELECT current_database()") == database
        finally:
            await connection.close()


def _assert_seen_as_external(instance: Instance, other_state: Path) -> None:
    """Another state directory on the same ports finds the servers but does not own them."""
    other = _settings(other_state, instance.kafka_port, instance.postgres_port)
    found = localinfra.up(other)
    assert found.kafka.state is ServerState.EXTERNAL
    assert found.postgres.state is ServerState.EXTERNAL
    assert found.usable
    localinfra.down(other)
    _assert_running(localinfra.status(instance.settings))


def _instance_pids(report: InfraStatus) -> set[int]:
    roots = {server.pid for server in report.servers if server.pid is not None}
    return roots | {pid for root in roots for pid in _children(root)}


def _children(parent: int) -> set[int]:
    children: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            if fields.get("PPid", "").strip() == str(parent):
                children.add(int(status.parent.name))
    return children


def _assert_nothing_left(instance: Instance, pids: set[int]) -> None:
    assert not [pid for pid in pids if _alive(pid)]
    for port in instance.ports:
        assert _refuses(port), f"port {port} still answers"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


@contextlib.contextmanager
def _listening_socket() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
