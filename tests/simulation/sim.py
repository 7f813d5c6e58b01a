"""The scheduler of one simulated schedule: its seeded choices, its actors,
the points where it interleaves, fails or crashes them, and its trace.

Every in-memory port awaits ``Sim.pause(what)`` before it acts. There the
scheduler, drawing from the schedule's one ``random.Random``, lets the
caller go on at once, delays it (other tasks run first: interleaving,
reordering across partitions), raises a transient failure of that port, or
crashes the calling service. A crash is a ``kill -9``: the actor is marked
dead and every later call of any of its tasks raises ``Crashed`` before it
acts, so nothing it had in hand (a batch in flight, an offset not
committed, a ``finally`` that would commit) ever reaches the ports; the
supervisor starts a new instance on the same ports after a pause.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka.errors import KafkaConnectionError

from tablesync.core.events import Side
from tablesync.errors import ApiUnavailable

__all__ = ["Actor", "Crashed", "Sim", "SimClock", "Step", "Weights"]

EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


class Crashed(BaseException):
    """The calling service was killed: no handler of the service may catch it."""


@dataclass
class Actor:
    """One running instance of a service (or the users)."""

    name: str
    kind: str
    dead: bool = False
    task: asyncio.Task[None] | None = None
    stalled_until: float = 0.0
    """Frozen (a stopped process, a long pause) until then: none of its tasks runs."""


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    actor: str
    what: str
    outcome: str

    def __str__(self) -> str:
        return f"{self.at:9.3f}s {self.actor:<22} {self.what:<40} {self.outcome}"


@dataclass(frozen=True, slots=True)
class Weights:
    """The chance of each thing at one pause of a service (crash, transient
    failure, delay of up to ``max_delay_s`` virtual seconds)."""

    crash: float = 0.004
    transient: float = 0.01
    delay: float = 0.3
    max_delay_s: float = 0.4
    stall: float = 0.0
    """The chance an apply instance freezes for ``stall_s`` (past its session
    timeout) at a pause, and resumes where it was: a zombie."""
    stall_s: tuple[float, float] = (11.0, 16.0)


_CURRENT: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("actor", default=None)


class SimClock:
    """``Clock`` on the loop's virtual time."""

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


@dataclass
class Sim:
    seed: int
    weights: Weights = field(default_factory=Weights)
    rng: random.Random = field(init=False)
    trace: list[Step] = field(default_factory=list)
    faults: bool = True
    verbose: bool = False
    """Trace every step, not only the notable ones (for replaying one seed)."""
    crashes: int = 0
    transients: int = 0
    steps: int = 0
    failures: list[str] = field(default_factory=list)
    stalls: int = 0
    on_stall: Callable[[Actor, float], None] | None = None
    """Told of each stall: the world freezes the actor's consumers too."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Ids of their own stream: drawing one changes no other choice.
        self._ids = random.Random(self.seed ^ 0x1D5)

    def new_id(self) -> str:
        """A record id as random as uuid4's, the same on every replay."""
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # Actors

    def run_as(self, actor: Actor, body: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Starts ``body`` as ``actor``; every task it spawns is that actor too."""

        async def main() -> None:
            _CURRENT.set(actor)
            await body()

        ctx = contextvars.copy_context()
        actor.task = asyncio.get_running_loop().create_task(main(), context=ctx)
        return actor.task

    def note(self, actor: str, what: str, outcome: str = "") -> None:
        self.trace.append(Step(_now(), actor, what, outcome))

    # The point every port call goes through

    async def pause(self, what: str, *, port: str, side: Side | None = None) -> None:
        actor = _CURRENT.get()
        self.steps += 1
        if actor is None:
            return
        frozen = actor.stalled_until - _now()
        if frozen > 0:
            await asyncio.sleep(frozen)
        if actor.dead:
            raise Crashed(actor.name)
        if self.verbose:
            self.note(actor.name, what)
        if not self.faults or actor.kind == "users":
            await asyncio.sleep(0)
            return
        w = self.weights
        r = self.rng.random()
        if r < w.crash:
            self.crashes += 1
            actor.dead = True
            self.note(actor.name, what, "CRASH")
            # The process dies whole: its main task too, wherever it waits.
            if actor.task is not None and actor.task is not asyncio.current_task():
                actor.task.cancel()
            raise Crashed(actor.name)
        r -= w.crash
        if r < w.stall and actor.kind == "apply":
            self.stalls += 1
            seconds = self.rng.uniform(*w.stall_s)
            actor.stalled_until = _now() + seconds
            self.note(actor.name, what, f"STALL {seconds:.1f}s")
            if self.on_stall is not None:
                self.on_stall(actor, seconds)
            await asyncio.sleep(seconds)
            if actor.dead:
                raise Crashed(actor.name)
            return
        r -= w.stall
        if r < w.transient and (port != "log" or _kafka_may_fail(what)):
            self.transients += 1
            self.note(actor.name, what, "transient failure")
            if side is not None:
                raise ApiUnavailable(f"simulated: {what} unavailable", side=side)
            if port == "log":
                raise KafkaConnectionError(f"simulated: {what} failed")
            raise ConnectionError(f"simulated: {what} unreachable")
        r -= w.transient
        if r < w.delay:
            await asyncio.sleep(self.rng.uniform(0, w.max_delay_s))
        else:
            await asyncio.sleep(0)


def _kafka_may_fail(what: str) -> bool:
    """The log's calls that fail on a real client after its own retries: a
    commit (the group moved on), a publish (acks timed out). Fetches and
    group membership are retried inside the client and never reach the caller."""
    return what.startswith(("commit ", "publish"))


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0
