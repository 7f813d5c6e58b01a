"""Waiting that a stop request cuts short, and steps retried until they succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

__all__ = ["BACKOFF_S", "sleep_or_stop", "until_done"]

log = structlog.get_logger()

# The pauses between tries of a failing step, the last one repeated.
BACKOFF_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 30)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Waits ``seconds`` or until ``stop`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def until_done(
    stop: asyncio.Event,
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    transient: tuple[type[BaseException], ...],
    backoff_s: Sequence[float] = BACKOFF_S,
) -> bool:
    """Runs ``step`` until it succeeds (True); a transient failure is logged and
    tried again after a growing pause. False when a stop cut it short: nothing
    of the step was committed, and whoever starts next repeats it."""
    attempt = 0
    while not stop.is_set():
        try:
            await step()
            return True
        except transient as exc:
            delay = backoff_s[min(attempt, len(backoff_s) - 1)]
            attempt += 1
            log.warning(
                "transient_failure",
                step=what,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            if await sleep_or_stop(stop, delay):
                return False
    return False
