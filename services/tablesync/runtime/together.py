"""Running steps side by side, all or none.

``asyncio.gather`` lets the other awaitables run on when one fails. In apply
that is a second, unseen copy of a batch: the failed step is tried again
while the abandoned partitions of the first attempt are still writing, so
one event is applied twice at once (a record created twice)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["together"]

T = TypeVar("T")


async def together(*steps: Coroutine[Any, Any, T]) -> list[T]:
    """The results of ``steps``, run side by side; when one fails the others are
    cancelled and finished before its exception (not an ExceptionGroup) is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step) for step in steps]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
