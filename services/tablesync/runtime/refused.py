"""Reads a side refuses, as apply and capture meet them.

A refusal of the credentials or a permission (``ReadRefused.credentials``)
is the side's, not a record's: every read would be refused alike. It is
noted and raised, and the service waits it out like an outage (it is one of
``adapters.transient.TRANSIENT``) with its position kept, until an operator
fixes it. A refusal of the query may be of some of its records only (a value
the side cannot read, a query too long): ``narrowed`` asks again for halves
of them, down to the records the side refuses alone, which the caller makes
record errors while the others go on. Each refusal is logged (side, entity
set, status, the side's reason) and counted in ``metrics.read_refused``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from tablesync import metrics
from tablesync.errors import ReadRefused

__all__ = ["narrowed", "noted", "refusal_message"]

log = structlog.get_logger()

K = TypeVar("K")
R = TypeVar("R")

# The side's reason, as logged: enough to name what it refused, never a
# whole query full of record values.
_REASON_CHARS = 300


def noted(refused: ReadRefused, *, records: int | None = None, **where: object) -> None:
    """Logs and counts one refused read; ``where`` names what read it."""
    metrics.read_refused(refused.side, refused.entity_set, refused.status)
    event = "read_refused" if refused.credentials or records in (None, 1) else "read_narrowed"
    emit = log.warning if event == "read_refused" else log.info
    emit(
        event,
        side=refused.side,
        entity_set=refused.entity_set,
        status=refused.status,
        reason=refused.reason[:_REASON_CHARS],
        credentials=refused.credentials,
        records=records,
        **where,
    )


def refusal_message(refused: ReadRefused) -> str:
    """What a record's error says of the read its side refused."""
    return f"{refused.side} refused to read {refused.entity_set}: {refused.reason}"


async def narrowed(
    keys: Sequence[K],
    read: Callable[[Sequence[K]], Awaitable[R]],
    /,
    **where: object,
) -> tuple[list[R], dict[K, ReadRefused]]:
    """The results of ``read`` over ``keys``, and the keys whose read the side
    refuses even alone, each with its refusal. A refused read of several keys
    is read again in halves (one after the other: a side that refuses is not
    asked twice as hard). A refusal of the credentials is raised."""
    if not keys:
        return [], {}
    try:
        return [await read(keys)], {}
    except ReadRefused as refused:
        noted(refused, records=len(keys), **where)
        if refused.credentials:
            raise
        if len(keys) == 1:
            return [], {keys[0]: refused}
    half = len(keys) // 2
    results: list[R] = []
    refusals: dict[K, ReadRefused] = {}
    for part in (keys[:half], keys[half:]):
        found, refused_here = await narrowed(part, read, **where)
        results.extend(found)
        refusals.update(refused_here)
    return results, refusals
