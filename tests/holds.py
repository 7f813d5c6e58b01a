"""Holding a coordinator's first job, so a test acts while a step runs,
whatever the machine's speed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tablesync.runtime.coordinator import CoordinatorService


@dataclass
class FirstJobHold:
    """``entered`` is set once a coordinator waits on its first job; that wait
    goes on only after ``release`` is set."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def hold_first_job(monkeypatch: pytest.MonkeyPatch) -> FirstJobHold:
    hold = FirstJobHold()
    real_wait = CoordinatorService._wait_for_job

    async def held_wait(
        self: CoordinatorService, job_id: str, partitions: int, stop: asyncio.Event
    ) -> bool:
        if not hold.entered.is_set():
            hold.entered.set()
            await hold.release.wait()
        return await real_wait(self, job_id, partitions, stop)

    monkeypatch.setattr(CoordinatorService, "_wait_for_job", held_wait)
    return hold
