"""Fixtures of the admin tests: a whole stack (tests/integration/stack.py) whose
``run all`` serves the admin server on a free port, a client of its API, and
the ``tablesync`` command run as a separate process against the same stack."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.composition import topics_for
from tablesync.localinfra.network import free_ports
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations
from tests.conftest import InfraEndpoints
from tests.integration.conftest import state_dsn, state_template, topic_prefix
from tests.integration.stack import Stack, open_stack, wait_for

__all__ = ["ADMIN_TOKEN", "Admin", "CliResult", "free_port", "run_cli"]

# The integration fixtures, shared rather than copied.
_SHARED = (state_dsn, state_template, topic_prefix)

ADMIN_TOKEN = "admin-test-token"


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Admin:
    """The running stack and a client of its admin server."""

    stack: Stack
    url: str
    client: httpx.AsyncClient

    @property
    def settings_overrides(self) -> dict[str, object]:
        port = int(self.url.rsplit(":", 1)[1])
        return {"admin_port": port, "admin_token": SecretStr(ADMIN_TOKEN)}

    async def start(self) -> None:
        """Starts the stack's services again, admin server included."""
        await self.stack.start(**self.settings_overrides)
        await wait_for(self.healthy, timeout_s=30, what="the admin server to answer")

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    def cli_environment(self) -> dict[str, str]:
        return self.stack.environment(
            TABLESYNC_ADMIN_PORT=self.url.rsplit(":", 1)[1],
            TABLESYNC_ADMIN_TOKEN=ADMIN_TOKEN,
            TABLESYNC_LOG_LEVEL="warning",
        )


@pytest.fixture
async def admin(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Admin]:
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as stack:
        url = f"http://127.0.0.1:{free_port()}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            a = Admin(stack, url, client)
            await a.start()
            yield a


@pytest.fixture
async def ops(admin: Admin) -> AsyncIterator[Operations]:
    settings = admin.stack.settings
    publisher = KafkaPublisher(KafkaConnection.from_settings(settings))
    await publisher.start()
    try:
        yield Operations(
            JobStore(admin.stack.pool), publisher, Codec(), topics_for(settings), SystemClock()
        )
    finally:
        await publisher.stop()


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


async def run_cli(admin: Admin, *args: str, timeout_s: float = 120.0) -> CliResult:
    """``tablesync <args>`` in its own process against the stack; waits for its exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        *args,
        env=admin.cli_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())
