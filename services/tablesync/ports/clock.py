"""Time, injected so rules and schedules can be tested without waiting.

``now()`` is the calendar time stamped on events and rows; ``monotonic()``
measures intervals (timeouts, pacing, durations). A simulator gives both from
its event loop's virtual time, so nothing in the services reads the machine's
clock behind the scheduler's back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards; only
        differences between two readings mean anything."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
