"""A service started while its database, broker or a side's API is away
waits for it, logging each try and what it waits for, and starts once it
answers. The address is a proxy's port nobody listens on yet; then it
listens, forwarding to the real server (a Kafka client reaches the broker's
own advertised address after bootstrap, so only the bootstrap goes through
the proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from structlog.testing import capture_logs

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.composition import run_services
from tablesync.settings import Settings, redact_dsn
from tests.conftest import InfraEndpoints
from tests.integration.conftest import state_dsn, state_template, topic_prefix
from tests.integration.stack import open_stack, wait_for
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.integration

_SHARED = (state_dsn, state_template, topic_prefix)
MAPPINGS = default_mapping_file()


@pytest.fixture
async def loaded_dsn(state_dsn: str) -> str:
    pool = await create_pool(state_dsn)
    try:
        await MappingStore(pool).replace_all(yaml.safe_load(MAPPINGS.read_text()))
    finally:
        await pool.close()
    return state_dsn


def through(dsn: str, proxy: TcpProxy) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{proxy.host}:{proxy.port}"
    at = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunsplit((parts.scheme, at, parts.path, parts.query, parts.fragment))


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def events(logs: list[dict[str, Any]], name: str) -> Callable[[], Any]:
    async def found() -> list[dict[str, Any]]:
        return [e for e in logs if e["event"] == name]

    return found


async def wait_then_start(
    settings: Settings,
    proxy: TcpProxy,
    waiting_for: str,
    address: str,
    *,
    service: Any = "coordinator",
    side: Any = None,
    started: str = "coordinator_started",
) -> None:
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(
            run_services(settings, service, side=side, stop=stop, handle_signals=False)
        )
        try:

            async def tried_twice() -> bool:
                return len(await events(logs, "waiting_for_infrastructure")()) >= 2

            await wait_for(tried_twice, timeout_s=60, what=f"two tries to reach the {waiting_for}")
            assert not running.done(), "the service exited instead of waiting"
            tries = await events(logs, "waiting_for_infrastructure")()
            assert {e["waiting_for"] for e in tries} == {waiting_for}
            assert all(e["address"] == address and e["error"] for e in tries)
            assert [e["attempt"] for e in tries[:2]] == [1, 2]
            await proxy.listen()
            await wait_for(events(logs, started), timeout_s=90, what=f"{service} to start")
            assert not running.done()
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=60)
    running.result()


async def test_a_service_started_while_the_database_is_away_waits_for_it(
    loaded_dsn: str, topic_prefix: str, infra: InfraEndpoints
) -> None:
    async with TcpProxy(port_of(urlsplit(loaded_dsn).netloc)) as proxy:
        dsn = through(loaded_dsn, proxy)
        settings = Settings(
            database_url=dsn,
            kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
            topic_prefix=topic_prefix,
        )
        await wait_then_start(settings, proxy, "database", redact_dsn(dsn))


async def test_a_service_started_while_the_broker_is_away_waits_for_it(
    loaded_dsn: str, topic_prefix: str, infra: InfraEndpoints
) -> None:
    broker = infra.kafka_bootstrap_servers.split(",")[0]
    async with TcpProxy(port_of(broker), target_host=broker.rsplit(":", 1)[0]) as proxy:
        settings = Settings(
            database_url=loaded_dsn,
            kafka_bootstrap_servers=proxy.address,
            topic_prefix=topic_prefix,
        )
        await wait_then_start(settings, proxy, "broker", proxy.address)


async def test_a_capture_started_while_its_api_is_away_waits_for_it(
    state_dsn: str, topic_prefix: str, infra: InfraEndpoints
) -> None:
    """BC's company is looked up at start: an API that is away (or throttling)
    past the connector's own retries is waited for, not a reason to exit."""
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as stack:
        bc = urlsplit(stack.settings.bc.base_url)
        assert bc.port is not None
        async with TcpProxy(bc.port) as proxy:
            base_url = f"http://{proxy.address}{bc.path}"
            api = stack.settings.bc.model_copy(
                update={"base_url": base_url, "max_retries": 1, "backoff_base_s": 0.05}
            )
            settings = stack.settings.model_copy(update={"bc": api})
            await wait_then_start(
                settings,
                proxy,
                "bc API",
                base_url,
                service="capture",
                side="bc",
                started="capture_started",
            )
