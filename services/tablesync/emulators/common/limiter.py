"""The service-protection limit: at most ``budget`` requests in any sliding window."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Limiter"]


class Limiter:
    """A sliding log of admitted requests.

    ``admit`` returns None when the request may run, else the whole seconds until the
    oldest request in the window leaves it: the ``Retry-After`` both APIs send.
    """

    def __init__(
        self, budget: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._admitted: deque[float] = deque()
        self.budget = budget
        self.window_s = window_s

    def configure(self, budget: int, window_s: float) -> None:
        self.budget = budget
        self.window_s = window_s
        self._admitted.clear()

    def admit(self) -> int | None:
        now = self._clock()
        horizon = now - self.window_s
        admitted = self._admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) >= self.budget:
            if not admitted:
                return max(1, math.ceil(self.window_s))
            return max(1, math.ceil(admitted[0] + self.window_s - now))
        admitted.append(now)
        return None
