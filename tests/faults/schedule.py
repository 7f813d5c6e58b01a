"""The faults: a seeded schedule of what breaks when, and the code that breaks it.

Every kind of fault is spread over the fault phase (stratified, so the same
kind does not bunch up). Faults on one target — a process, an emulator, the
broker and PostgreSQL — wait for each other; faults on different targets
overlap freely. A fault point that the process does not reach in time is
disarmed and tried again, so the figures count faults that really happened."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from tablesync.core.events import Side
from tests.faults.broker import Poison, poison_message, publish
from tests.faults.pipeline import MAPPING_NAMES, Pipeline
from tests.faults.scope import TABLES
from tests.faults.workload import Driver

__all__ = ["KINDS", "Fault", "Injector", "Plan", "plan_faults"]

KINDS = (
    "kill -9 apply",
    "kill -9 capture",
    "kill -9 coordinator",
    "crash apply between create and coupling",
    "crash apply between commit and offset commit",
    "crash capture between publish and checkpoint",
    "broker stop/start",
    "postgres restart",
    "429 storm",
    "5xx burst",
    "emulator down",
    "poison: undecodable bytes",
    "poison: unknown table",
    "poison: rejected by the destination",
)
_SIDES: tuple[Side, Side] = ("bc", "dataverse")


@dataclass(frozen=True)
class Plan:
    """How hard a run pushes."""

    name: str
    fault_phase_s: float
    # Scheduled per kind; a fault point not reached in time is tried again,
    # but one can still miss at the end of the phase, hence the margin.
    per_kind: int
    min_per_kind: int
    min_changes: int
    workers: int
    rate_per_s: float
    emulator_down_s: float
    storm_s: tuple[float, float]
    fault_point_timeout_s: float
    sync_every_s: float
    settle_timeout_s: float
    stable_window_s: float


@dataclass(frozen=True, order=True)
class Fault:
    at_s: float
    kind: str
    target: str
    detail: int = 0


def plan_faults(plan: Plan, rng: random.Random) -> list[Fault]:
    faults: list[Fault] = []
    warmup = min(10.0, plan.fault_phase_s * 0.1)
    span = plan.fault_phase_s - warmup - 5.0
    for kind in KINDS:
        for i in range(plan.per_kind):
            at = warmup + (i + rng.random()) * span / plan.per_kind
            faults.append(Fault(round(at, 2), kind, _target(kind, rng), rng.randint(1, 4)))
    return sorted(faults)


def _target(kind: str, rng: random.Random) -> str:
    if "apply" in kind:
        return rng.choice(MAPPING_NAMES)
    if "capture" in kind:
        side = rng.choice(_SIDES)
        if "checkpoint" in kind:
            table = rng.choice(TABLES)
            return f"{side}:{table.entity_set(side)}"
        return side
    if kind in ("429 storm", "5xx burst", "emulator down"):
        return rng.choice(_SIDES)
    if kind.startswith("poison: un"):
        side = rng.choice(_SIDES)
        return f"{side}:{rng.choice(TABLES).entity_set(side)}"
    return ""


@dataclass
class Injector:
    pipeline: Pipeline
    driver: Driver
    plan: Plan
    rng: random.Random
    injected: Counter[str] = field(default_factory=Counter)
    not_reached: Counter[str] = field(default_factory=Counter)
    poison: list[Poison] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _started: float = field(default_factory=time.monotonic)
    _serial: int = 0

    def _next(self) -> int:
        """A number no other fault of this run has: faults of one kind may overlap."""
        self._serial += 1
        return self._serial

    async def run(self, faults: list[Fault]) -> None:
        self._started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        try:
            for fault in faults:
                # The schedule's own clock: faults happen at their planned time.
                await asyncio.sleep(max(0.0, self._started + fault.at_s - time.monotonic()))
                tasks.append(asyncio.create_task(self._one(fault)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _note(self, text: str) -> None:
        self.timeline.append(f"{time.monotonic() - self._started:8.1f}s {text}")

    async def _one(self, fault: Fault) -> None:
        kind = fault.kind
        p = self.pipeline
        if kind == "kill -9 apply":
            await self._kill(f"apply-{fault.target}", kind)
        elif kind == "kill -9 capture":
            await self._kill(f"capture-{fault.target}", kind)
        elif kind == "kill -9 coordinator":
            await self._kill("coordinator", kind)
        elif kind == "crash apply between create and coupling":
            await self._crash(f"apply-{fault.target}", f"apply.before_commit:{fault.target}", fault)
        elif kind == "crash apply between commit and offset commit":
            await self._crash(f"apply-{fault.target}", f"apply.after_commit:{fault.target}", fault)
        elif kind == "crash capture between publish and checkpoint":
            side, table = fault.target.split(":")
            # The first poll after a start carries the backlog of the restart,
            # more than the capture's overlap re-reads: the window that matters.
            fault = Fault(fault.at_s, kind, fault.target, 1)
            await self._crash(f"capture-{side}", f"capture.before_checkpoint:{table}", fault)
        elif kind == "broker stop/start":
            async with self.locks["infra"]:
                self._note("broker stopping")
                await p.infra.stop_broker()
                await asyncio.sleep(self.rng.uniform(0.0, 3.0))
                await p.infra.start_broker()
                self._note("broker started")
                self.injected[kind] += 1
        elif kind == "postgres restart":
            async with self.locks["infra"]:
                self._note("postgres stopping")
                await p.infra.stop_postgres()
                await asyncio.sleep(self.rng.uniform(0.0, 3.0))
                await p.infra.start_postgres()
                self._note("postgres started")
                self.injected[kind] += 1
        elif kind in ("429 storm", "5xx burst", "emulator down"):
            await self._emulator(kind, _side(fault.target), fault)
        elif kind.startswith("poison: un"):
            side_name, table = fault.target.split(":")
            what = "undecodable" if "undecodable" in kind else "unknown table"
            message = poison_message(what, p.topics, _side(side_name), table, self._next())
            await self._publish(message)
            self.poison.append(message)
            self.injected[kind] += 1
        elif kind == "poison: rejected by the destination":
            await self.driver.create_rejected(self._next())
            self.injected[kind] += 1

    async def _kill(self, name: str, kind: str) -> None:
        proc = self.pipeline.supervisor[name]
        async with self.locks[name]:
            self._note(f"kill -9 {name}")
            proc.kill9()
            await proc.wait_exit(30.0)
            await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            if not proc.running:
                await proc.start()
            self.injected[kind] += 1

    async def _crash(self, name: str, point: str, fault: Fault) -> None:
        proc = self.pipeline.supervisor[name]
        async with self.locks[name]:
            for _ in range(3):
                self._note(f"arm {name} at {point} after {fault.detail}")
                await proc.arm(point, fault.detail)
                try:
                    await asyncio.wait_for(proc.fired.wait(), self.plan.fault_point_timeout_s)
                except TimeoutError:
                    self.not_reached[fault.kind] += 1
                    await proc.disarm()
                    continue
                self._note(f"{name} died at {point}")
                self.injected[fault.kind] += 1
                return

    async def _emulator(self, kind: str, side: Side, fault: Fault) -> None:
        api = self.pipeline.apis[side]
        async with self.locks[f"emulator-{side}"]:
            if kind == "429 storm":
                seconds = self.rng.uniform(*self.plan.storm_s)
                self._note(f"429 storm on {side} for {seconds:.1f}s")
                await api.inject(
                    {"status": 429, "for_seconds": seconds, "retry_after": self.rng.choice((1, 2))}
                )
                await asyncio.sleep(seconds)
            elif kind == "5xx burst":
                status = self.rng.choice((500, 502, 503, 504))
                count = 5 + 5 * fault.detail
                self._note(f"{count} x {status} on {side}")
                await api.inject({"status": status, "count": count})
            else:
                proc = self.pipeline.emulators[side]
                self._note(f"{side} emulator down for {self.plan.emulator_down_s:.0f}s")
                proc.kill9()
                await proc.wait_exit(30.0)
                await asyncio.sleep(self.plan.emulator_down_s)
                await self.pipeline.start_emulator(side)
                self._note(f"{side} emulator back")
            self.injected[kind] += 1

    async def _publish(self, message: Poison) -> None:
        while True:
            try:
                await publish(self.pipeline.infra.bootstrap, message, 30.0)
                return
            except (KafkaError, OSError, TimeoutError):
                # The broker may be the one restarting right now.
                await asyncio.sleep(1.0)


def _side(text: str) -> Side:
    return "bc" if text == "bc" else "dataverse"
