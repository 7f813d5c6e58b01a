"""Injected failures: the next requests fail with a chosen status, for a count or a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Fault", "Faults"]

FAULT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class Fault:
    status: int
    remaining: int | None
    until: float | None
    retry_after: int


class Faults:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._fault: Fault | None = None

    def inject(
        self,
        status: int,
        *,
        count: int | None = None,
        for_seconds: float | None = None,
        retry_after: int = 1,
    ) -> Fault:
        if status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {sorted(FAULT_STATUSES)}")
        if (count is None) == (for_seconds is None):
            raise ValueError("give exactly one of count and for_seconds")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        if for_seconds is not None and for_seconds <= 0:
            raise ValueError("for_seconds must be positive")
        until = None if for_seconds is None else self._clock() + for_seconds
        self._fault = Fault(status, count, until, max(0, retry_after))
        return self._fault

    def clear(self) -> None:
        self._fault = None

    def describe(self) -> dict[str, object] | None:
        fault = self._fault
        if fault is None:
            return None
        left = None if fault.until is None else max(0.0, fault.until - self._clock())
        return {"status": fault.status, "remaining": fault.remaining, "seconds_left": left}

    def take(self) -> Fault | None:
        """The fault this request suffers, if one is active; counts it down."""
        fault = self._fault
        if fault is None:
            return None
        if fault.until is not None and self._clock() >= fault.until:
            self._fault = None
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault
