"""Liveness and readiness of one process, what a supervisor probes.

- **Live** while the process runs its services: the answer itself shows its
  event loop turns; once it stops (a signal, or a service that failed and
  takes the process down) it is not. A dependency that is away never makes
  a process not live: restarting it would not bring the broker back.
- **Ready** when every dependency its services use answered its last probe
  (Kafka, PostgreSQL, the sides' APIs), each probed on its own interval
  with a timeout, and every service loop came round within
  ``stale_after_s``: capture's polls, the consume loops of apply, the
  coordinator and capture's snapshots, the coordinator's lock wait.

The probes run in ``run``; the answers are read from their last results, so
a probe request returns at once whatever the dependencies do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from tablesync.ports.clock import Clock
from tablesync.runtime.stopping import sleep_or_stop

__all__ = [
    "Beat",
    "CheckState",
    "Health",
    "HealthReport",
    "LoopState",
    "Loops",
    "Probe",
    "no_beat",
    "unwatched",
]

log = structlog.get_logger()

Probe = Callable[[], Awaitable[None]]
"""Returns when the dependency answered; raises (anything) when it did not."""
Beat = Callable[[], None]
"""Called by a service loop each time it comes round."""


Loops = Callable[..., Beat]
"""``loops(name, every_s=0.0)``: registers a service loop that comes round
at least every ``every_s`` (beside ``stale_after_s``) and returns its beat."""


def no_beat() -> None:
    """The heartbeat of a loop nobody watches."""


def unwatched(name: str, every_s: float = 0.0) -> Beat:
    """The ``Loops`` of a service run without a health monitor (tests, the simulation)."""
    return no_beat


@dataclass(frozen=True, slots=True)
class CheckState:
    ok: bool
    detail: str
    age_s: float | None


@dataclass(frozen=True, slots=True)
class LoopState:
    ok: bool
    last_beat_s: float | None


@dataclass(frozen=True, slots=True)
class HealthReport:
    ok: bool
    checks: dict[str, CheckState] = field(default_factory=dict)
    loops: dict[str, LoopState] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "checks": {
                name: {"ok": c.ok, "detail": c.detail, "age_s": _round(c.age_s)}
                for name, c in self.checks.items()
            },
            "loops": {
                name: {"ok": s.ok, "last_beat_s": _round(s.last_beat_s)}
                for name, s in self.loops.items()
            },
        }


@dataclass
class _Check:
    probe: Probe
    every_s: float
    ok: bool = False
    detail: str = "not checked yet"
    at: float | None = None


class Health:
    def __init__(
        self, clock: Clock, *, stale_after_s: float = 60.0, check_timeout_s: float = 3.0
    ) -> None:
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._timeout_s = check_timeout_s
        self._checks: dict[str, _Check] = {}
        self._beats: dict[str, float | None] = {}
        self._periods: dict[str, float] = {}
        self._running = False

    def add_check(self, name: str, probe: Probe, *, every_s: float) -> None:
        """A dependency; a second one of the same name is the same dependency."""
        self._checks.setdefault(name, _Check(probe, every_s))

    def loop(self, name: str, every_s: float = 0.0) -> Beat:
        """Registers a service loop; call what it returns each time the loop
        comes round. One that waits ``every_s`` between rounds has that much
        longer before it counts as stale."""
        self._beats.setdefault(name, None)
        self._periods[name] = every_s

        def beat() -> None:
            self._beats[name] = self._clock.monotonic()

        return beat

    async def run(self, stop: asyncio.Event) -> None:
        """Probes every dependency on its interval until ``stop``."""
        self._running = True
        try:
            await asyncio.gather(*(self._probe_loop(n, c, stop) for n, c in self._checks.items()))
        finally:
            self._running = False

    def live(self) -> HealthReport:
        return HealthReport(self._running, loops=self._loop_states())

    def ready(self) -> HealthReport:
        checks = self._check_states()
        loops = self._loop_states()
        ok = (
            self._running
            and all(c.ok for c in checks.values())
            and all(s.ok for s in loops.values())
        )
        return HealthReport(ok, checks, loops)

    async def _probe_loop(self, name: str, check: _Check, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._probe(name, check)
            await sleep_or_stop(stop, check.every_s)

    async def _probe(self, name: str, check: _Check) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await check.probe()
        except Exception as exc:
            reason = (
                f"no answer within {self._timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            if check.ok or check.at is None:
                log.warning("health_check_failed", check=name, reason=reason)
            check.ok, check.detail = False, reason
        else:
            if not check.ok and check.at is not None:
                log.info("health_check_recovered", check=name)
            check.ok, check.detail = True, "answered"
        check.at = self._clock.monotonic()

    def _check_states(self) -> dict[str, CheckState]:
        now = self._clock.monotonic()
        return {
            name: CheckState(c.ok, c.detail, None if c.at is None else now - c.at)
            for name, c in self._checks.items()
        }

    def _loop_states(self) -> dict[str, LoopState]:
        now = self._clock.monotonic()
        states = {}
        for name, at in self._beats.items():
            age = None if at is None else now - at
            limit = self._stale_after_s + self._periods.get(name, 0.0)
            states[name] = LoopState(age is not None and age <= limit, age)
        return states


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
