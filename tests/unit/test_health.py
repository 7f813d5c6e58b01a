"""A process's liveness and readiness from its probes and loops, on a clock
the test moves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tablesync.runtime.health import Health


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t


class _Dependency:
    def __init__(self) -> None:
        self.answers = True
        self.hangs = False
        self.asked = asyncio.Event()

    async def probe(self) -> None:
        self.asked.set()
        if self.hangs:
            await asyncio.Event().wait()
        if not self.answers:
            raise ConnectionRefusedError("connection refused")


async def _probed(health: Health, *deps: _Dependency) -> None:
    for dep in deps:
        dep.asked.clear()
    for dep in deps:
        await asyncio.wait_for(dep.asked.wait(), timeout=5)
    # One more turn of the loop: the probe's result is recorded after it returns.
    await asyncio.sleep(0)


async def test_ready_needs_every_dependency_and_every_loop() -> None:
    clock = _Clock()
    health = Health(clock, stale_after_s=60, check_timeout_s=0.2)
    db, broker = _Dependency(), _Dependency()
    health.add_check("postgres", db.probe, every_s=0.01)
    health.add_check("kafka", broker.probe, every_s=0.01)
    beat = health.loop("apply CUSTOMER")
    slow_beat = health.loop("capture bc deletions", every_s=30)
    assert not health.ready().ok and not health.live().ok, "nothing runs yet"

    stop = asyncio.Event()
    task = asyncio.create_task(health.run(stop))
    try:
        await _probed(health, db, broker)
        report = health.ready()
        assert not report.ok, "no loop came round yet"
        assert report.loops["apply CUSTOMER"].last_beat_s is None
        assert health.live().ok

        beat()
        slow_beat()
        assert health.ready().ok

        clock.t += 61
        report = health.ready()
        assert not report.ok
        assert not report.loops["apply CUSTOMER"].ok
        assert report.loops["capture bc deletions"].ok, "a loop that waits 30 s has 90 s"
        assert health.live().ok, "a stale loop is not a dead process"
        beat()
        assert health.ready().ok

        broker.answers = False
        await _probed(health, broker)
        await _probed(health, broker)
        report = health.ready()
        assert not report.ok
        assert report.checks["kafka"].detail == "ConnectionRefusedError: connection refused"
        assert report.checks["postgres"].ok

        broker.answers = True
        db.hangs = True
        await _probed(health, broker, db)
        await asyncio.sleep(0.3)
        report = health.ready()
        assert report.checks["kafka"].ok
        assert report.checks["postgres"].detail == "no answer within 0.2 s"
        assert not report.ok
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert not health.live().ok, "a process that stopped is not live"


def test_report_as_dict() -> None:
    health = Health(_Clock())
    health.loop("coordinator commands")()
    assert health.ready().as_dict() == {
        "status": "unavailable",
        "checks": {},
        "loops": {"coordinator commands": {"ok": True, "last_beat_s": 0.0}},
    }
