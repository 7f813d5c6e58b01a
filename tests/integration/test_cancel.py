"""Cancelling a run on the real stack: the step running finishes its job, the
steps after it never start, and another full synchronization may start at once;
a run nobody is working on is released the same way."""

from __future__ import annotations

import asyncio

import pytest

from tablesync.application import Operator
from tablesync.errors import AlreadyRunning, CommandRefused, NotFound
from tablesync.runtime.coordinator import CoordinatorService
from tests.holds import hold_first_job
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
WAIT_S = 120.0


@pytest.fixture
def stack(idle_stack: Stack) -> Stack:
    return idle_stack


async def test_a_run_cancelled_mid_step_finishes_that_step_only(
    stack: Stack, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first job of the run is held until the run is cancelled, so the
    # cancellation lands while a step runs, whatever the machine's speed.
    hold = hold_first_job(monkeypatch)
    await stack.start()
    run_id = await operator.full_sync()
    await asyncio.wait_for(hold.entered.wait(), WAIT_S)

    cancelled = await operator.cancel(run_id, requested_by="ops")
    assert cancelled.status == "cancelled" and "cancelled by ops" in cancelled.message
    with pytest.raises(CommandRefused, match="ended already"):
        await operator.cancel(run_id)
    # Free at once: the next full synchronization is accepted while the
    # cancelled run's step still runs.
    second = await operator.full_sync(mappings=["CURRENCY"])
    hold.release.set()

    done = await operator.wait(second, timeout_s=WAIT_S)
    assert done.run.status == "finished", done.run.message
    # The commands topic has one partition: the second run's steps came after
    # every step of the first, so those were all seen and left alone.
    first = await operator.progress(run_id)
    assert first.run.status == "cancelled"
    assert [(j.mapping, j.status) for j in first.jobs] == [("CURRENCY", "finished")]
    assert first.jobs[0].counts["inserted"] > 0


async def test_a_run_nobody_works_on_is_released(operator: Operator) -> None:
    # No services run: the run stays requested until it is cancelled.
    run_id = await operator.full_sync()
    with pytest.raises(AlreadyRunning):
        await operator.full_sync()
    released = await operator.cancel(run_id)
    assert released.status == "cancelled" and released.started_at is None
    await operator.full_sync()
    with pytest.raises(NotFound):
        await operator.cancel("8b1c8f5e-58a2-4c25-9d36-f3a3f2b0a111")


async def test_a_run_whose_coordinator_is_gone_for_good_is_released_after_the_bound(
    stack: Stack, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_wait = CoordinatorService._wait_for_job
    entered = asyncio.Event()

    async def stuck_wait(
        self: CoordinatorService, job_id: str, partitions: int, stop: asyncio.Event
    ) -> bool:
        # The coordinator dies mid-step: it never gets past its first job.
        entered.set()
        await stop.wait()
        return False

    monkeypatch.setattr(CoordinatorService, "_wait_for_job", stuck_wait)
    await stack.start()
    run_id = await operator.full_sync()
    await asyncio.wait_for(entered.wait(), WAIT_S)
    stopped_at = asyncio.get_running_loop().time()
    await stack.stop()
    monkeypatch.setattr(CoordinatorService, "_wait_for_job", real_wait)

    bound_s = 3.0
    monkeypatch.setattr(
        operator, "settings", operator.settings.model_copy(update={"stale_run_after_s": bound_s})
    )
    # Its coordinator stopped just now: the run may still be resumed.
    with pytest.raises(AlreadyRunning):
        await operator.full_sync()
    second = await _accepted_within(operator, WAIT_S)
    assert asyncio.get_running_loop().time() - stopped_at >= bound_s * 0.9
    released = await operator.progress(run_id)
    assert released.run.status == "cancelled"
    assert released.run.message.startswith("released: no coordinator held its lease for 3 s")

    # A coordinator that comes back skips the released run's steps and runs the new one.
    await stack.start()
    done = await operator.wait(second, timeout_s=WAIT_S)
    assert done.run.status == "finished", done.run.message
    after = await operator.progress(run_id)
    assert after.run == released.run
    assert [j.mapping for j in after.jobs] == ["CURRENCY"]


async def _accepted_within(operator: Operator, timeout_s: float) -> str:
    """The run id of the first full synchronization of CURRENCY accepted."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await operator.full_sync(mappings=["CURRENCY"])
        except AlreadyRunning:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
