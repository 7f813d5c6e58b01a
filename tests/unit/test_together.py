"""Side-by-side steps stop together: no step outlives the failure of another."""

from __future__ import annotations

import asyncio

import pytest

from tablesync.errors import ApiUnavailable
from tablesync.runtime.together import together


async def test_results_come_in_the_order_of_the_steps() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await together(after(0.02, 1), after(0.0, 2)) == [1, 2]


async def test_a_failure_stops_the_other_steps_before_it_is_raised() -> None:
    finished: list[str] = []
    started = asyncio.Event()

    async def slow_write() -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append("written")

    async def failing_read() -> None:
        await started.wait()
        raise ApiUnavailable("dataverse: GET contacts: gave up", side="dataverse", status=503)

    # The caller's retry logic catches the failure by its own type.
    with pytest.raises(ApiUnavailable):
        await together(slow_write(), failing_read())
    await asyncio.sleep(0.6)
    # With asyncio.gather the write would have gone on and happened.
    assert finished == []
