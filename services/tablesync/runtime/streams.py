"""Reading ahead: the next page is fetched while the current one is being used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")

_DONE = object()


async def read_ahead(source: AsyncIterator[T], depth: int = 1) -> AsyncIterator[T]:
    """Yields what ``source`` yields, keeping up to ``depth`` items fetched in advance.

    A failure of ``source`` is raised where the item would have been; closing
    the reader stops the fetching."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=depth)

    async def fill() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # handed to the reader, raised there
            await queue.put(_Failure(exc))
            return
        await queue.put(_DONE)

    task = asyncio.create_task(fill())
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _Failure:
    def __init__(self, error: Exception) -> None:
        self.error = error
