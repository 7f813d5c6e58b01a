"""`run all` on the real stack: one service that fails is started again on its
own while the others go on, and the work it missed is done once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.composition import topics_for
from tablesync.ports.clock import SystemClock
from tablesync.runtime.apply import ApplyService
from tablesync.runtime.operations import Operations
from tests.conftest import InfraEndpoints
from tests.integration.stack import Stack, open_stack
from tests.unit.test_supervise import restarts

pytestmark = pytest.mark.integration
CODEC = Codec()
BEFORE: dict[str, float] = {}


@pytest.fixture
async def stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    real_run = ApplyService.run
    failed = asyncio.Event()

    async def run_with_one_defect(self: ApplyService, stop: asyncio.Event) -> None:
        # CUSTOMER's apply fails once, after the process is up; built again, it works.
        if self.mapping_name == "CUSTOMER" and not failed.is_set():
            failed.set()
            raise RuntimeError("a defect of one mapping's apply")
        await real_run(self, stop)

    monkeypatch.setattr(ApplyService, "run", run_with_one_defect)
    BEFORE.clear()
    BEFORE.update(restarts())
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as s:
        await s.start()
        assert failed.is_set()
        yield s


async def test_a_failed_apply_is_started_again_and_the_others_go_on(stack: Stack) -> None:
    publisher = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
    await publisher.start()
    try:
        ops = Operations(
            JobStore(stack.pool), publisher, CODEC, topics_for(stack.settings), SystemClock()
        )
        run_id = await ops.full_sync()
        progress = await ops.wait(run_id, timeout_s=180)
    finally:
        await publisher.stop()
    assert progress.run.status == "finished", progress.run.message
    customer = [j for j in progress.jobs if j.mapping == "CUSTOMER"]
    assert customer and all(
        j.counts["inserted"] > 0 for j in customer if j.direction == "to_integration"
    )
    # Only the failed service was started again: the process did not go down.
    assert stack._task is not None and not stack._task.done()
    after = restarts()
    grown = {k: after[k] - BEFORE.get(k, 0.0) for k in after if after[k] != BEFORE.get(k, 0.0)}
    assert grown == {"apply.CUSTOMER": 1.0}
