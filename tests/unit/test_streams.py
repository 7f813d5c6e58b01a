"""Reading ahead keeps order, raises the source's failure, and stops the source."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tablesync.runtime.streams import read_ahead


async def _numbers(n: int, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"page {i} failed")
        yield i


async def test_items_come_in_order() -> None:
    assert [i async for i in read_ahead(_numbers(50), depth=3)] == list(range(50))


async def test_a_failure_of_the_source_is_raised_to_the_reader() -> None:
    seen: list[int] = []

    async def read() -> None:
        async for i in read_ahead(_numbers(10, fail_at=4)):
            seen.append(i)

    with pytest.raises(RuntimeError, match="page 4 failed"):
        await read()
    assert seen == [0, 1, 2, 3]


async def test_stopping_early_stops_the_source() -> None:
    produced: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    reader = read_ahead(source(), depth=2)
    async for i in reader:
        if i == 5:
            break
    await reader.aclose()
    assert len(produced) <= 5 + 3
