"""Consumer lag on the real broker: the CLI, the admin API and the Prometheus
series agree; lag drops to 0 when the pipeline is idle, grows while a
mapping's apply is stopped and changes keep arriving, and drains when it
runs again."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.admin.consumers import consumer_groups
from tablesync.composition import ServiceName, run_services, topics_for
from tablesync.runtime.operations import Operations
from tablesync.settings import Settings
from tests.admin.conftest import Admin, run_cli
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

Key = tuple[str, str, int]


async def _api_lag(admin: Admin) -> dict[str, Any]:
    r = await admin.client.get("/api/lag")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _metric_lag(admin: Admin) -> dict[Key, int]:
    r = await admin.client.get("/metrics")
    assert r.status_code == 200, r.text
    found: dict[Key, int] = {}
    for family in text_string_to_metric_families(r.text):
        if family.name == "tablesync_consumer_lag_messages":
            for s in family.samples:
                key = (s.labels["group"], s.labels["topic"], int(s.labels["partition"]))
                found[key] = int(s.value)
    return found


def _by_partition(report: dict[str, Any]) -> dict[Key, int]:
    return {(p["group"], p["topic"], p["partition"]): p["lag"] for p in report["partitions"]}


def _mapping_lag(report: dict[str, Any], mapping: str) -> int:
    return int(next(m["lag"] for m in report["mappings"] if m["mapping"] == mapping))


async def test_cli_api_and_metrics_agree_and_reach_zero_when_idle(
    admin: Admin, ops: Operations
) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message

    async def idle() -> dict[str, Any] | None:
        report = await _api_lag(admin)
        return report if report["total"] == 0 else None

    report = await wait_for(idle, timeout_s=60, what="every consumer group to catch up")
    cli = await run_cli(admin, "lag", "--json")
    assert cli.code == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    from_metrics = await _metric_lag(admin)
    assert _by_partition(from_cli) == _by_partition(report) == from_metrics
    assert all(lag == 0 for lag in from_metrics.values())
    # The change topics were really read: the apply groups committed past 0.
    committed = [p for p in from_cli["partitions"] if p["service"] == "apply" and p["end"] > 0]
    assert committed and all(p["committed"] == p["end"] for p in committed)
    assert {m["mapping"] for m in from_cli["mappings"]} == set(
        (await MappingStore(admin.stack.pool).load()).names()
    )

    # The groups the lag view knows are exactly the groups the services run.
    settings = admin.stack.settings
    expected = {
        g.group
        for g in consumer_groups(topics_for(settings), await MappingStore(admin.stack.pool).load())
    }
    kafka = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await kafka.start()
    try:
        running = {g for g, _ in await kafka.list_consumer_groups()}
    finally:
        await kafka.close()
    assert {g for g in running if g.startswith(settings.topic_prefix)} == expected


@contextlib.asynccontextmanager
async def _services(
    settings: Settings, *which: tuple[ServiceName, str | None]
) -> AsyncIterator[None]:
    """Runs some services (not ``all``) until the block ends."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_services(settings, name, mapping=mapping, stop=stop, handle_signals=False)
        )
        for name, mapping in which
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_lag_grows_while_apply_is_stopped_and_drains_when_it_runs(
    admin: Admin, ops: Operations
) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    stack = admin.stack

    async def idle() -> bool:
        return bool((await _api_lag(admin))["total"] == 0)

    await wait_for(idle, timeout_s=60, what="the pipeline to be idle before stopping it")
    customers = [
        c for c in await stack.bc_rows("customers") if c["id"] in await stack.couplings("CUSTOMER")
    ]
    await stack.stop()
    settings = stack.settings.model_copy(update=admin.settings_overrides)
    group = f"{settings.topic_prefix}tablesync.apply.CUSTOMER"

    async with _services(settings, ("capture", None), ("coordinator", None), ("admin", None)):
        await wait_for(admin.healthy, timeout_s=30, what="the admin server")
        for i, customer in enumerate(customers[:3]):
            await stack.bc_patch("customers", customer["id"], {"phoneNumber": f"+1 555 01{i:02d}"})

        def behind(report: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                p
                for p in report["partitions"]
                if p["group"] == group and p["topic"].endswith("cdc.bc.customers") and p["lag"]
            ]

        async def lagging() -> dict[str, Any] | None:
            report = await _api_lag(admin)
            return report if sum(p["lag"] for p in behind(report)) >= 3 else None

        report = await wait_for(lagging, timeout_s=30, what="CUSTOMER's lag to grow")
        assert all(p["oldest_age_s"] is not None for p in behind(report))
        cli = await run_cli(admin, "lag", "--json")
        assert cli.code == 0, cli.stderr
        assert _mapping_lag(json.loads(cli.stdout), "CUSTOMER") >= 3
        metrics = await _metric_lag(admin)
        assert sum(v for (g, _, _), v in metrics.items() if g == group) >= 3

        async with _services(settings, ("apply", "CUSTOMER")):

            async def drained() -> bool:
                return _mapping_lag(await _api_lag(admin), "CUSTOMER") == 0

            await wait_for(drained, timeout_s=60, what="CUSTOMER's lag to drain")
    accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
    couplings = await stack.couplings("CUSTOMER")
    for i, customer in enumerate(customers[:3]):
        assert accounts[couplings[customer["id"]]]["telephone1"] == f"+1 555 01{i:02d}"
