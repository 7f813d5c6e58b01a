"""Apply and capture ride out a database that goes away just after they
start (between the process's start-up checks and their first read): they
wait for it like any step rather than exit. On in-memory ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tablesync.core.mappings import MappingSet
from tests.capturing import on_virtual_time
from tests.mempipeline import Pipeline, pipeline


def _refused_twice(p: Pipeline) -> list[int]:
    """The mappings' first two reads fail as a restarting PostgreSQL's do."""
    calls: list[int] = []
    load: Callable[[], Awaitable[MappingSet]] = p.stores.mappings.load

    async def flaky() -> MappingSet:
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionResetError(104, "Connection reset by peer")
        return await load()

    p.stores.mappings.load = flaky  # type: ignore[method-assign]
    return calls


async def _runs_on(service: Any, ready: Callable[[], bool], calls: list[int]) -> None:
    stop = asyncio.Event()
    running = asyncio.ensure_future(service.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while not ready():
        assert not running.done(), running
        assert loop.time() < deadline, "the service did not start in time"
        await asyncio.sleep(0.2)
    assert len(calls) == 3
    stop.set()
    await running


def test_apply_waits_for_a_database_gone_at_its_start() -> None:
    async def body() -> None:
        p = await pipeline()
        calls = _refused_twice(p)
        service = p.apply()
        await _runs_on(service, lambda: service._applier is not None, calls)

    on_virtual_time(body)


def test_capture_waits_for_a_database_gone_at_its_start() -> None:
    async def body() -> None:
        p = await pipeline()
        calls = _refused_twice(p)
        held = p.database.t.checkpoints
        await _runs_on(p.capture("bc"), lambda: ("bc", "customers") in held, calls)

    on_virtual_time(body)
