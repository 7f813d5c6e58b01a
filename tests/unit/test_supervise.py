"""runtime.supervise: a failed service of a shared process is started again on
its own, after growing pauses, until the process stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tablesync import metrics
from tablesync.runtime.supervise import Run, supervised

WAIT_S = 10.0


class StepClock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t


class Flaky:
    """A service that fails its first ``failures`` runs, then runs until stopped."""

    def __init__(self, failures: int, clock: StepClock, ran_s: float = 0.0) -> None:
        self.failures = failures
        self.clock = clock
        self.ran_s = ran_s
        self.built = 0
        self.running = asyncio.Event()
        self.failed = asyncio.Event()

    async def make(self) -> Run:
        self.built += 1
        attempt = self.built

        async def run(stop: asyncio.Event) -> None:
            self.clock.t += self.ran_s
            if attempt <= self.failures:
                self.failed.set()
                raise RuntimeError(f"defect number {attempt}")
            self.running.set()
            await stop.wait()

        return run


def restarts() -> dict[str, float]:
    """``tablesync_service_restarts_total`` of this process, by service, as exported."""
    text = metrics.render(metrics.StateSnapshot(), process=False).decode()
    return {
        s.labels["service"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tablesync_service_restarts_total"
    }


async def test_a_failing_service_is_built_again_until_it_runs() -> None:
    clock = StepClock()
    service = Flaky(failures=2, clock=clock)
    stop = asyncio.Event()
    before = restarts().get("apply.flaky", 0.0)
    task = asyncio.create_task(
        supervised("apply.flaky", service.make, stop, clock=clock, backoff_s=(0.01,))
    )
    await asyncio.wait_for(service.running.wait(), WAIT_S)
    assert service.built == 3
    assert restarts()["apply.flaky"] == before + 2
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_the_first_run_is_the_one_given() -> None:
    clock = StepClock()
    service = Flaky(failures=0, clock=clock)
    stop = asyncio.Event()
    first = await service.make()
    task = asyncio.create_task(supervised("x", service.make, stop, clock=clock, first=first))
    await asyncio.wait_for(service.running.wait(), WAIT_S)
    assert service.built == 1
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_stop_during_the_pause_ends_it_without_a_restart() -> None:
    clock = StepClock()
    service = Flaky(failures=100, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(
        supervised("capture.bc", service.make, stop, clock=clock, backoff_s=(3600.0,))
    )
    await asyncio.wait_for(service.failed.wait(), WAIT_S)
    stop.set()
    await asyncio.wait_for(task, WAIT_S)
    assert service.built == 1


async def test_pauses_grow_and_start_over_after_a_long_healthy_run() -> None:
    clock = StepClock()
    pauses: list[float] = []
    stop = asyncio.Event()
    real_wait_for = asyncio.wait_for

    async def noted_sleep_or_stop(event: asyncio.Event, seconds: float) -> bool:
        pauses.append(seconds)
        if len(pauses) >= 6:
            event.set()
        return event.is_set()

    service = Flaky(failures=100, clock=clock)
    runs_s = iter([0.0, 0.0, 0.0, 500.0, 0.0, 0.0])

    async def make() -> Run:
        run = await service.make()

        async def timed(s: asyncio.Event) -> None:
            clock.t += next(runs_s)
            await run(s)

        return timed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tablesync.runtime.supervise.sleep_or_stop", noted_sleep_or_stop)
        await real_wait_for(
            supervised(
                "coordinator",
                make,
                stop,
                clock=clock,
                backoff_s=(1, 2, 5),
                healthy_after_s=300,
            ),
            WAIT_S,
        )
    # The fourth run lasted 500 s before failing: counted as well, it starts
    # the pauses from the first again.
    assert pauses == [1, 2, 5, 1, 2, 5]


async def test_cancellation_is_not_a_failure() -> None:
    clock = StepClock()
    service = Flaky(failures=0, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(supervised("x", service.make, stop, clock=clock))
    await asyncio.wait_for(service.running.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.built == 1
