"""Waiting that a stop request cuts short."""

from __future__ import annotations

import asyncio

__all__ = ["sleep_or_stop"]


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Waits ``seconds`` or until ``stop`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
