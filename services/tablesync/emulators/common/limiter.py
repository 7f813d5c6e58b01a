"""Service protection, per user: the request budget of a sliding window, and (when
the real limits are on) the documented concurrency, execution-time budget, latency
and per-record cost of each API.

The request budget alone is the emulators' default: at most ``budget`` requests in
any sliding window of ``window_s``. ``RealLimits.documented`` adds what the two
services document:

- Dataverse, "Service protection API limits" (Power Apps developer docs): per user,
  6,000 requests and 20 minutes (1,200 s) of combined execution time within a
  5-minute sliding window, and 52 concurrent requests; past the count or the time a
  429 with ``Retry-After`` (seconds) on the following requests, past the concurrency
  a 429 at once. "Send parallel requests" adds the ``x-ms-dop-hint`` response header,
  the recommended degree of parallelism (no value is documented; none is sent unless
  configured).
- Business Central, "Working with API limits in Dynamics 365 Business Central" and
  "Operational limits for Business Central online" (OData request limits): per user,
  6,000 requests within a 5-minute sliding window, 5 requests processed at once with
  up to 95 more waiting in a queue (100 connections in all) and 429 past that; at most
  100 operations in a ``$batch`` (``bc/batch.py``). No execution-time budget.

A run that cannot last five minutes scales the window: the budgets shrink by the same
factor, so the ceiling per second stays the documented one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from tablesync.core.events import Side

__all__ = [
    "DOCUMENTED_WINDOW_S",
    "ExecutionBudget",
    "Gate",
    "Limiter",
    "Protection",
    "RealLimits",
    "RequestCost",
    "UserLimits",
    "count_written",
    "current_cost",
    "metering",
]

DOCUMENTED_WINDOW_S = 300.0
"""Both services evaluate their budgets over a 5-minute sliding window."""
_DOCUMENTED_REQUESTS = 6000
_DATAVERSE_EXECUTION_S = 1200.0
_DATAVERSE_CONCURRENT = 52
_BC_CONCURRENT = 5
_BC_QUEUED = 95


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


class ExecutionBudget:
    """Dataverse's combined execution time: the seconds that the requests finished
    within the sliding window took, added up. Once they reach ``budget_s``, ``admit``
    answers the whole seconds until enough of them leave the window."""

    def __init__(
        self, budget_s: float, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._log: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self.budget_s = budget_s
        self.window_s = window_s

    @property
    def used_s(self) -> float:
        self._expire(self._clock())
        return self._sum

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        log = self._log
        while log and log[0][0] <= horizon:
            self._sum -= log.popleft()[1]
        if not log:
            self._sum = 0.0

    def admit(self) -> int | None:
        now = self._clock()
        self._expire(now)
        if self._sum < self.budget_s:
            return None
        left = self._sum
        longest = max(1, math.ceil(self.window_s))
        for at, seconds in self._log:
            left -= seconds
            if left < self.budget_s:
                # (at - now) first: at + window - now rounds to a hair over the
                # window when at == now, and its ceiling to a second too many.
                return min(longest, max(1, math.ceil((at - now) + self.window_s)))
        return longest

    def charge(self, seconds: float) -> None:
        now = self._clock()
        self._expire(now)
        self._log.append((now, seconds))
        self._sum += seconds


class Gate:
    """At most ``concurrent`` requests at once; up to ``queued`` more wait for a
    slot in arrival order; past those ``enter`` refuses at once (a 429)."""

    def __init__(self, concurrent: int, queued: int = 0) -> None:
        self.concurrent = concurrent
        self.queued = queued
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> bool:
        """True once the request holds a slot (it must ``leave``); False when refused."""
        if self.active < self.concurrent and not self._waiters:
            self.active += 1
            return True
        if len(self._waiters) >= self.queued:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just before the cancellation: pass it on.
                self.leave()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        return True

    def leave(self) -> None:
        """Frees a slot: handed straight to the longest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


@dataclass(frozen=True, slots=True)
class RealLimits:
    """What the real limits add to the request budget (see the module docstring)."""

    concurrent: int
    """Requests of one user processed at once."""
    queued: int = 0
    """Requests of one user that may wait for a slot (BC); 0 refuses at once (Dataverse)."""
    latency_s: float = 0.05
    """Added to every request, inside its slot: the service's own response time."""
    record_cost_s: float = 0.0
    """Server time per record a request writes (a $batch or a bulk message writes many)."""
    execution_s: float | None = None
    """Combined execution seconds of one user per window (Dataverse); None: no budget."""
    dop_hint: int | None = None
    """Dataverse: the ``x-ms-dop-hint`` header sent on every response; None: not sent."""

    @classmethod
    def documented(
        cls,
        side: Side,
        *,
        window_s: float,
        latency_s: float = 0.05,
        record_cost_s: float = 0.0,
    ) -> tuple[int, RealLimits]:
        """The documented per-user limits of ``side`` for a window of ``window_s``
        (the budgets scaled from 5 minutes): the request budget and the rest."""
        scale = window_s / DOCUMENTED_WINDOW_S
        requests = max(1, round(_DOCUMENTED_REQUESTS * scale))
        if side == "dataverse":
            limits = cls(
                concurrent=_DATAVERSE_CONCURRENT,
                latency_s=latency_s,
                record_cost_s=record_cost_s,
                execution_s=_DATAVERSE_EXECUTION_S * scale,
            )
        else:
            limits = cls(
                concurrent=_BC_CONCURRENT,
                queued=_BC_QUEUED,
                latency_s=latency_s,
                record_cost_s=record_cost_s,
            )
        return requests, limits

    def describe(self) -> dict[str, object]:
        return {
            "concurrent_requests": self.concurrent,
            "queued_requests": self.queued,
            "latency_ms": round(self.latency_s * 1000, 3),
            "record_cost_ms": round(self.record_cost_s * 1000, 3),
            "execution_s_per_window": self.execution_s,
            "dop_hint": self.dop_hint,
        }


@dataclass(slots=True)
class UserLimits:
    """One user's share: each user is limited on its own, as both services do."""

    requests: Limiter
    execution: ExecutionBudget | None = None
    gate: Gate | None = None
    admitted: int = 0
    """Requests of this user let through the request budget since it was first seen."""


@dataclass
class Protection:
    """The limits of one emulator, kept per user (the bearer token a request carries)."""

    budget: int
    window_s: float
    real: RealLimits | None = None
    clock: Callable[[], float] = time.monotonic
    _users: dict[str, UserLimits] = field(default_factory=dict, init=False, repr=False)

    def user(self, key: str) -> UserLimits:
        limits = self._users.get(key)
        if limits is None:
            limits = self._users[key] = self._fresh()
        return limits

    def _fresh(self) -> UserLimits:
        real = self.real
        return UserLimits(
            requests=Limiter(self.budget, self.window_s, self.clock),
            execution=None
            if real is None or real.execution_s is None
            else ExecutionBudget(real.execution_s, self.window_s, self.clock),
            gate=None if real is None else Gate(real.concurrent, real.queued),
        )

    def in_flight(self) -> tuple[int, int]:
        """Requests holding a slot and requests waiting for one, over every user."""
        gates = [u.gate for u in self._users.values() if u.gate is not None]
        return sum(g.active for g in gates), sum(g.waiting for g in gates)

    def admitted_by_user(self) -> list[int]:
        """Each user's admitted requests, most first: how evenly clients spread their
        requests (the users' tokens are secrets, so they are not named)."""
        return sorted((u.admitted for u in self._users.values()), reverse=True)

    def configure(self, budget: int | None = None, window_s: float | None = None) -> None:
        """A new request budget or window for every user, counted afresh."""
        self.budget = self.budget if budget is None else budget
        self.window_s = self.window_s if window_s is None else window_s
        self._users.clear()

    def enforce(self, real: RealLimits | None) -> None:
        """The real limits from now on (None: the request budget alone), every user
        counted afresh; requests in flight keep the slot they hold."""
        self.real = real
        self._users.clear()


@dataclass(slots=True)
class RequestCost:
    """What one request made the server do: the records it wrote."""

    records: int = 0


_current: ContextVar[RequestCost | None] = ContextVar("tablesync_emulator_cost", default=None)


@contextlib.contextmanager
def metering() -> Iterator[RequestCost]:
    """Counts the records written by the request handled within the block."""
    cost = RequestCost()
    token = _current.set(cost)
    try:
        yield cost
    finally:
        _current.reset(token)


def count_written(records: int) -> None:
    """Charges ``records`` written to the request being handled (when it is metered)."""
    cost = _current.get()
    if cost is not None:
        cost.records += records


def current_cost() -> RequestCost | None:
    return _current.get()
