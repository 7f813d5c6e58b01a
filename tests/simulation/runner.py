"""Runs schedules: one seed is one world, one workload, one stream of faults,
and one verdict. ``python -m tests.simulation --seed S`` replays one exactly
and prints its trace (under ``PYTHONHASHSEED=0``, which it sets: the order
of the sets the engine iterates is part of a schedule); ``--schedules N``
runs N from a base seed;
``--profile`` picks the faults (see ``_profile``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import structlog

from tablesync.adapters.avro import Codec
from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.runtime.replay import replay
from tests.simulation.checks import check
from tests.simulation.sim import EPOCH, Crashed, Sim, SimClock, Step, Weights
from tests.simulation.users import Truth, run_users
from tests.simulation.vloop import VirtualLoop
from tests.simulation.world import World, open_world

__all__ = ["PROFILES", "Outcome", "run_schedule"]

_SETTLE_LIMIT_S = 900.0


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    trace: list[Step] = field(default_factory=list)
    crashes: int = 0
    transients: int = 0
    steps: int = 0
    actions: int = 0
    virtual_s: float = 0.0
    echoes: int = 0
    """Rows capture did not publish as versions their couplings held already."""

    def report(self, *, steps: int = 60) -> str:
        lines = [
            f"seed {self.seed}: {len(self.violations)} violations, {self.actions} user actions,"
            f" {self.crashes} crashes, {self.transients} transient failures,"
            f" {self.steps} steps, {self.virtual_s:.1f} virtual s, {self.echoes} echoes skipped"
        ]
        lines += [f"  violation: {v}" for v in self.violations]
        if self.violations:
            lines.append(f"  trace (last {steps} notable steps):")
            lines += [f"    {s}" for s in self.trace[-steps:]]
        return "\n".join(lines)


def _quiet() -> None:
    # The services log every batch; a schedule's story is its trace. Loggers
    # are not cached, so that what the tests in this process configure after
    # a schedule (capture_logs) still reaches every module's logger.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=False,
    )


async def _schedule(seed: int, profile: str, verbose: bool) -> Outcome:
    weights, instances = _profile(profile, seed)
    sim = Sim(seed, weights, verbose=verbose)
    rng = sim.rng
    world = await open_world(sim, apply_instances=instances)
    truth = Truth()
    echoes = 0
    try:
        await _until_capturing(world)
        await run_users(
            sim,
            world.sides,  # type: ignore[arg-type]
            truth,
            records=rng.randint(1, 4),
            actions=rng.randint(3, 14),
            span_s=rng.uniform(4.0, 20.0),
        )
        sim.faults = False
        sim.note("scheduler", "faults off, settling")
        await _settle(world)
        violations = await check(
            truth,
            world.sides,  # type: ignore[arg-type]
            world.stores,
            world.open_intents,
            world.changes(),
        )
        violations += sim.failures
        if world.lag():
            violations.append(f"apply lag {world.lag()} after settling")
        if not violations:
            violations += await _replay_changes_nothing(world)
        echoes = world.echoes_skipped()
    finally:
        await world.close()
    return Outcome(
        seed,
        violations,
        sim.trace,
        sim.crashes,
        sim.transients,
        sim.steps,
        truth.actions,
        asyncio.get_running_loop().time(),
        echoes,
    )


PROFILES = ("calm", "faults", "instances", "all")


def _profile(name: str, seed: int) -> tuple[Weights, int]:
    """The faults and the apply instances of a schedule.

    - ``calm``: no crash and no failure; every port call may still be
      delayed, so services, partitions and users interleave in any order;
    - ``faults``: crashes of any service at any port call and transient
      failures of the APIs, the database and the log (three mixes);
    - ``instances``: two or three apply instances of the mapping, sharing
      its partitions through rebalances, with crashes and zombies (an
      instance frozen past its session timeout that resumes mid-batch);
    - ``all``: one of the three, by seed."""
    if name == "all":
        name = PROFILES[seed % 3]
    if name == "calm":
        return Weights(crash=0.0, transient=0.0), 1
    if name == "faults":
        mix = seed % 3
        if mix == 0:
            return Weights(crash=0.02, transient=0.005), 1
        if mix == 1:
            return Weights(crash=0.004, transient=0.04), 1
        return Weights(), 1
    if name == "instances":
        return Weights(crash=0.004, transient=0.0, stall=0.002), 2 + seed % 2
    raise ValueError(f"unknown profile {name!r}: one of {', '.join(PROFILES)}")


async def _until_capturing(world: World) -> None:
    """Users begin once capture covers their changes: a capture that dies
    before it stored its first checkpoint starts again from its own start."""
    deadline = asyncio.get_running_loop().time() + _SETTLE_LIMIT_S
    while not world.capturing():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("capture never stored a first checkpoint")
        await asyncio.sleep(0.05)


async def _settle(world: World) -> None:
    """Runs on until the world is at rest: nothing left to apply, nothing
    pending or announced, and the sides unchanged over a few polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SETTLE_LIMIT_S
    last = None
    calm = 0
    while loop.time() < deadline:
        await asyncio.sleep(5.0)
        now = world.versions()
        busy = world.lag() or world.open_intents() or world.database.t.statuses.of("CUSTOMER")
        calm = calm + 1 if (now == last and not busy) else 0
        last = now
        if calm >= 3:
            return


async def _replay_changes_nothing(world: World) -> list[str]:
    """Invariant 2: every event of the schedule, applied once more by the
    operator's replay, changes neither side and counts as unchanged."""
    before = world.versions()
    # Claimed as the operator's replay is, beside the apply instances still running.
    claims = MemoryPairClaims(world.database)
    try:
        result = await replay(
            mapping="CUSTOMER",
            since=EPOCH,
            until=None,
            stores=world.stores,
            window=world.broker.window(),
            apis=dict(world.sides),
            mappings=await world.stores.mappings.load(),
            topics=world.topics,
            settings=world.settings.sync,
            codec=Codec(),
            clock=SimClock(),
            claims=claims,
        )
    finally:
        await claims.close()
    found = []
    if world.versions() != before:
        found.append("replaying every event changed a side")
    counted = {k: v for k, v in result.counts.items() if v and k != "unchanged"}
    if counted:
        found.append(f"replaying every event counted {counted}, not only unchanged")
    return found


def run_schedule(seed: int, *, profile: str = "calm", verbose: bool = False) -> Outcome:
    before = structlog.get_config()
    _quiet()
    loop = VirtualLoop()

    def ignore_crashes(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if isinstance(context.get("exception"), Crashed | asyncio.CancelledError):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(ignore_crashes)
    try:
        return loop.run_until_complete(_schedule(seed, profile, verbose))
    finally:
        loop.close()
        # The process's logging as it was: a schedule's quiet ends with it.
        structlog.configure(**before)
