"""The faults: a seeded schedule of what breaks when, and the code that breaks it.

Every kind of fault is spread over the fault phase (stratified, so the same
kind does not bunch up). Faults on one target — a process, an emulator, the
broker and PostgreSQL — wait for each other; faults on different targets
overlap freely. A fault that needs a moment to come (a fault point reached, a
run in progress, a scan that lists ids, a checkpoint past a stamp) and does
not come in time is undone and tried again, so the figures count faults that
really happened."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from aiokafka.errors import KafkaError

from tablesync.adapters.kafka.consumer import SESSION_TIMEOUT_MS
from tablesync.core.events import Side
from tests.faults.broker import Poison, poison_message, publish
from tests.faults.late import late_write
from tests.faults.pipeline import (
    MAPPING_NAMES,
    TRANSIENT_DB,
    LeaseTake,
    Pipeline,
    apply_name,
    lease_name,
)
from tests.faults.procs import Proc
from tests.faults.scope import TABLES, Table
from tests.faults.sides import id_field
from tests.faults.workload import Driver, Rec

__all__ = ["KINDS", "OPERATOR_MAPPING", "Fault", "Injector", "Plan", "Takeover", "plan_faults"]

KINDS = (
    "kill -9 apply",
    "kill -9 capture",
    "kill -9 coordinator",
    "crash apply between create and coupling",
    "crash apply between commit and offset commit",
    "crash capture between publish and checkpoint",
    "rebalance: kill/start an apply instance",
    "zombie: pause an apply instance past the session timeout, then resume it",
    "broker stop/start",
    "postgres restart",
    "lease lost: restart PostgreSQL under the coordinator",
    "429 storm",
    "5xx burst",
    "emulator down",
    "late commit: a row whose stamp is older than the checkpoint",
    "short read during a deletion scan",
    "poison: undecodable bytes",
    "poison: unknown table",
    "poison: rejected by the destination",
)
_SIDES: tuple[Side, Side] = ("bc", "dataverse")
T = TypeVar("T")
OPERATOR_MAPPING = "CUSTOMER"
"""The one mapping the operator's runs touch: a run re-reads what changed, which
would hide a change capture lost, so CONTACTS is left to continuous capture."""
_SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000
# A frozen instance stays frozen until the others took its partitions over (the
# group drops it after the session timeout, and the rebalance waits for each
# other member's batch in flight), at most this long.
_ZOMBIE_FROZEN_MAX_S = 6 * _SESSION_TIMEOUT_S
# Woken this long after the takeover at most: sometimes at once, while the new
# owner replays what the frozen one had in hand, sometimes later.
_ZOMBIE_LINGER_S = 3.0
# A late commit waits this long at most for capture to read past it.
_LATE_HOLD_S = 30.0
_LATE_BEHIND_S = (5.0, 30.0)
# How long a late commit waits for a record that has been quiet long enough.
_LATE_WAIT_S = 60.0
# What a short read leaves out of a listing of ids: under the share a scan may
# remove (the direct read must keep them), and far over it (the scan must stop).
_SHORT_SHARES = (0.05, 0.2, 0.6)
_TRIES = 3
_DB_DOWN = (*TRANSIENT_DB, TimeoutError)
# How often a takeover is looked for, and how long past its bound it is still
# watched for (so a late one is measured rather than only found late).
_TAKEOVER_POLL_S = 0.1
_TAKEOVER_WATCH_S = 60.0
# How long the log line of a take seen in the database may lag behind it.
_TAKEOVER_LOG_S = 5.0
# How long the new holder of a lease is given to write its first checkpoint.
_CHECKPOINT_WATCH_S = 30.0


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
    apply_instances: int
    # Capture processes per side: one holds the side's lease, the others stand by.
    capture_instances: int
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


@dataclass(frozen=True)
class Takeover:
    """A side's lease taken over after its holder died: the seconds from the
    death until another process took it (None: not within the watch), the
    bound it was held to, and the seconds until a holder since had written a
    checkpoint (None: none seen)."""

    side: Side
    died: str
    seconds: float | None
    bound_s: float
    checkpointed_s: float | None
    # A restart of PostgreSQL overlapped it: nobody takes a lease while the
    # database is away, so the bound counts from its return as well.
    during_db_restart: bool

    @property
    def in_time(self) -> bool:
        return self.seconds is not None and self.seconds <= self.bound_s


@dataclass
class _Outage:
    """PostgreSQL away, on the suite's monotonic clock (``end`` None: still away)."""

    start: float
    end: float | None = None


def plan_faults(plan: Plan, rng: random.Random) -> list[Fault]:
    faults: list[Fault] = []
    warmup = min(10.0, plan.fault_phase_s * 0.1)
    span = plan.fault_phase_s - warmup - 5.0
    for kind in KINDS:
        for i in range(plan.per_kind):
            at = warmup + (i + rng.random()) * span / plan.per_kind
            faults.append(Fault(round(at, 2), kind, _target(kind, plan, rng), rng.randint(1, 4)))
    return sorted(faults)


def _target(kind: str, plan: Plan, rng: random.Random) -> str:
    if "apply" in kind:
        return apply_name(rng.choice(MAPPING_NAMES), rng.randint(1, plan.apply_instances))
    if "capture" in kind:
        side = rng.choice(_SIDES)
        if "checkpoint" in kind:
            table = rng.choice(TABLES)
            return f"{side}:{table.entity_set(side)}"
        return side
    if kind in ("429 storm", "5xx burst", "emulator down", "short read during a deletion scan"):
        return rng.choice(_SIDES)
    if kind.startswith(("poison: un", "late commit")):
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
    # What the faults were seen to do (partitions that moved, ids left out, ...).
    observed: Counter[str] = field(default_factory=Counter)
    poison: list[Poison] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    takeovers: list[Takeover] = field(default_factory=list)
    _outages: list[_Outage] = field(default_factory=list)
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
            await self._kill(fault.target, kind)
        elif kind == "kill -9 capture":
            await self._kill_capture(_side(fault.target), kind)
        elif kind == "kill -9 coordinator":
            await self._kill("coordinator", kind)
        elif kind == "crash apply between create and coupling":
            await self._crash(fault.target, f"apply.before_commit:{_mapping_of(fault)}", fault)
        elif kind == "crash apply between commit and offset commit":
            await self._crash(fault.target, f"apply.after_commit:{_mapping_of(fault)}", fault)
        elif kind.startswith("rebalance"):
            await self._rebalance(fault)
        elif kind.startswith("zombie"):
            await self._zombie(fault)
        elif kind.startswith("lease lost"):
            await self._lease_lost(fault)
        elif kind.startswith("late commit"):
            await self._late_commit(fault)
        elif kind == "short read during a deletion scan":
            await self._short_read(fault)
        elif kind == "crash capture between publish and checkpoint":
            side, table = fault.target.split(":")
            # The first poll after taking the lease over carries the backlog of
            # the handover, more than the capture's overlap re-reads: the window
            # that matters.
            await self._crash_capture(_side(side), f"capture.before_checkpoint:{table}", kind)
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
                await self._restart_postgres()
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

    # apply instances leaving and coming back

    async def _taken_since(self, mapping: str, moment: datetime) -> bool:
        """Whether every partition of ``mapping`` was taken (by some instance)
        after ``moment``: the group rebalanced since."""
        rows = await self.pipeline.query(
            "SELECT count(*) FILTER (WHERE taken_at > $2) AS after, count(*) AS n "
            "FROM apply_epochs WHERE mapping = $1",
            mapping,
            moment,
        )
        return bool(rows[0]["n"]) and rows[0]["after"] == rows[0]["n"]

    async def _now(self) -> datetime:
        """The state database's clock, which stamps the epochs."""
        moment: datetime = (await self.pipeline.query("SELECT now() AS t"))[0]["t"]
        return moment

    async def _rebalance(self, fault: Fault) -> None:
        """One instance leaves the group — stopped, or killed and found silent
        after the session timeout — and stays away until its partitions have
        moved to the others; then it comes back and they move again. It counts
        once they did move (the group's coordinator, the broker, may be the
        one away)."""
        proc = self.pipeline.supervisor[fault.target]
        mapping = _mapping_of(fault)
        # One instance of a group leaves or freezes at a time: the others are there
        # to take its partitions.
        async with self.locks[f"group-{mapping}"], self.locks[proc.name]:
            for attempt in range(_TRIES):
                if await self._rebalance_once(proc, mapping, (fault.detail + attempt) % 2 == 1):
                    self.injected[fault.kind] += 1
                    return
                self.not_reached[fault.kind] += 1

    async def _rebalance_once(self, proc: Proc, mapping: str, kill: bool) -> bool:
        left = await self._now()
        self._note(f"rebalance: {'kill -9' if kill else 'stop'} {proc.name}")
        if kill:
            proc.kill9()
            await proc.wait_exit(30.0)
        else:
            await proc.stop()
        moved = await self._until(lambda: self._taken_since(mapping, left), 3 * _SESSION_TIMEOUT_S)
        await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        back = await self._now()
        if not proc.running:
            await proc.start()
        moved_back = await self._until(
            lambda: self._taken_since(mapping, back), 3 * _SESSION_TIMEOUT_S
        )
        self.observed["rebalance: partitions moved again once it was back"] += moved_back
        self._note(f"rebalance: {proc.name} back (moved {moved}, back {moved_back})")
        return moved

    async def _zombie(self, fault: Fault) -> None:
        """SIGSTOP past the session timeout: the group drops the frozen instance
        and gives its partitions to the others; SIGCONT: it wakes up mid-batch
        believing it still owns them, and must not write on. It counts once the
        others did take over while it was frozen."""
        proc = self.pipeline.supervisor[fault.target]
        mapping = _mapping_of(fault)
        group = self.pipeline.applies(mapping)
        async with self.locks[f"group-{mapping}"], self.locks[proc.name]:
            for _ in range(_TRIES):
                if not proc.running:
                    await proc.start()
                # The others may be coming back from a kill: they are to take over.
                await self._until(self._all_running(group), 3 * _SESSION_TIMEOUT_S)
                frozen = await self._now()
                self._note(f"zombie: freeze {proc.name}")
                proc.pause()
                paused = time.monotonic()
                try:
                    taken = await self._until(
                        partial(self._taken_since, mapping, frozen), _ZOMBIE_FROZEN_MAX_S
                    )
                    if taken:
                        await asyncio.sleep(self.rng.uniform(0.0, _ZOMBIE_LINGER_S))
                finally:
                    proc.resume()
                self._note(
                    f"zombie: {proc.name} thawed after {time.monotonic() - paused:.1f}s "
                    f"(taken over: {taken})"
                )
                if taken:
                    self.injected[fault.kind] += 1
                    return
                self.not_reached[fault.kind] += 1

    @staticmethod
    def _all_running(procs: list[Proc]) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return all(q.running for q in procs)

        return probe

    async def _until(self, probe: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
        """Whether ``probe`` came true within ``timeout_s``."""
        return await self._until_value(probe, bool, timeout_s)

    # the coordinator's lease

    async def _lease_lost(self, fault: Fault) -> None:
        """PostgreSQL restarts while the coordinator runs a synchronization: the
        session that held its lock is gone, and the run must still end. A run of
        the suite's few records takes well under a second, so it is watched for
        while it is being requested, and the restart counts only if the run was
        not over when PostgreSQL went down."""
        p = self.pipeline
        async with self.locks["infra"]:
            for attempt in range(_TRIES):
                run = "full-sync" if (fault.detail + attempt) % 2 else "sync-modified"
                since = stopped = await self._now()
                request = asyncio.create_task(p.cli([run, "--mapping", OPERATOR_MAPPING, "--json"]))
                try:
                    run_id = await self._until_value(
                        partial(self._running_since, since),
                        bool,
                        self.plan.fault_point_timeout_s,
                        every_s=0.02,
                    )
                    if run_id is not None:
                        stopped = await self._now()
                        self._note(f"lease lost: postgres stopping under {run} {run_id}")
                        await self._restart_postgres()
                finally:
                    # Refused when a full synchronization is requested or running already.
                    await request
                if run_id is None:
                    self.not_reached[fault.kind] += 1
                    continue
                under = await self._run_spans(run_id, stopped)
                self._note(f"lease lost: postgres started; the run spanned it: {under}")
                if under:
                    self.injected[fault.kind] += 1
                    return
                self.not_reached[fault.kind] += 1

    async def _running_since(self, since: datetime) -> str | None:
        rows = await self.pipeline.query(
            "SELECT run_id::text AS id FROM runs WHERE status = 'running' AND requested_at >= $1",
            since,
        )
        return str(rows[0]["id"]) if rows else None

    async def _run_spans(self, run_id: str, moment: datetime) -> bool:
        """Whether the run was still going at ``moment``."""
        rows = await self.pipeline.query(
            "SELECT status, finished_at FROM runs WHERE run_id = $1::uuid", run_id
        )
        if not rows:
            return False
        finished = rows[0]["finished_at"]
        return rows[0]["status"] == "running" or (finished is not None and finished > moment)

    async def _until_value(
        self,
        probe: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        timeout_s: float,
        every_s: float = 0.2,
    ) -> T:
        """What ``probe`` answers once ``done`` holds for it, or its last answer
        when ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await probe()
            if done(value) or time.monotonic() > deadline:
                return value
            await asyncio.sleep(every_s)

    # late commits and short reads

    async def _late_commit(self, fault: Fault) -> None:
        side_name, entity_set = fault.target.split(":")
        side = _side(side_name)
        table = next(t for t in TABLES if t.entity_set(side) == entity_set)
        tries = 0
        waiting_until = time.monotonic() + _LATE_WAIT_S
        while tries < _TRIES:
            # Not while PostgreSQL, which holds the emulators' tables too, restarts:
            # the open transaction would only be rolled back.
            async with self.locks["infra"]:
                landed = await self._late_once(table, side)
            if landed:
                self.injected[fault.kind] += 1
                return
            if landed is None and time.monotonic() < waiting_until:
                # No record quiet long enough yet under a busy workload: that
                # is no try, and one will be (each is edited only now and then).
                await asyncio.sleep(0.5)
                continue
            tries += 1
            self.not_reached[fault.kind] += 1
            await asyncio.sleep(1.0)

    async def _late_once(self, table: Table, side: Side) -> bool | None:
        """One late commit of a user's change; whether it landed behind the
        checkpoint (None: no record was quiet long enough to take one). The
        change is the user's whether or not it did."""
        low, high = _LATE_BEHIND_S
        rec = self.driver.take_for_late(table, side, quiet_s=low + 1.0)
        if rec is None:
            return None
        values = self.driver.new_values(table)
        quiet_s = time.monotonic() - rec.written_at
        behind_s = self.rng.uniform(low, min(high, quiet_s - 1.0))
        dsn = self.pipeline.infra.emulator_dsn(side)
        where = f"{side} {table.entity_set(side)} {rec.marker}"
        committing = behind = False
        try:
            async with late_write(dsn, table, side, rec.ids[side], values, behind_s) as stamp:
                if stamp is None:
                    raise LookupError(where)
                written = stamp + timedelta(seconds=behind_s)
                self._note(f"late commit: {where} stamped {behind_s:.0f}s back")
                behind = await self._until(
                    lambda: self._checkpoint_past(side, table.entity_set(side), written),
                    _LATE_HOLD_S,
                )
                committing = True
        except (*_DB_DOWN, LookupError) as exc:
            if not committing:
                # Rolled back (PostgreSQL restarted under it): nothing changed.
                self._note(f"late commit: {where} rolled back ({type(exc).__name__})")
                self.driver.release(rec, None)
                return False
            # The commit itself failed to answer: whether it happened, the record tells.
            landed = await self._shows(rec, side, table, values)
            self._note(f"late commit: {where} unclear ({type(exc).__name__}), landed: {landed}")
            self.driver.release(rec, values if landed else None)
            return False
        self.driver.release(rec, values)
        self._note(f"late commit: {where} committed (behind the checkpoint: {behind})")
        return behind

    async def _checkpoint_past(self, side: Side, entity_set: str, moment: datetime) -> bool:
        rows = await self.pipeline.query(
            "SELECT watermark FROM capture_checkpoints WHERE side = $1 AND table_name = $2",
            side,
            entity_set,
        )
        return bool(rows) and rows[0]["watermark"] > moment

    async def _shows(self, rec: Rec, side: Side, table: Table, values: dict[str, str]) -> bool:
        entity_set = table.entity_set(side)
        rows = await self.pipeline.apis[side].rows(
            entity_set, f"{id_field(side, entity_set)} eq {rec.ids[side]}"
        )
        return bool(rows) and all(
            str(rows[0].get(f.on(side)) or "").strip() == values[f.name] for f in table.editable
        )

    async def _short_read(self, fault: Fault) -> None:
        """For a few deletion-scan intervals, one side answers listings of ids
        short; a Dataverse table's deletions are only scanned for once its delta
        link expired, so its links expire first. Nothing may be deleted for it."""
        side = _side(fault.target)
        api = self.pipeline.apis[side]
        seconds = 3 * self.pipeline.tuning.delete_scan_interval_s
        async with self.locks[f"emulator-{side}"]:
            for attempt in range(_TRIES):
                share = _SHORT_SHARES[(fault.detail + attempt) % len(_SHORT_SHARES)]
                if side == "dataverse":
                    await api.expire_delta_links()
                self._note(f"short read on {side}: {share:.0%} of ids for {seconds:.0f}s")
                await api.short_listing(share, seconds)
                await asyncio.sleep(seconds)
                hidden = await api.hidden_from_listings()
                await api.end_short_listing()
                if hidden:
                    self.observed["short read: ids left out of deletion scans"] += hidden
                    self.injected[fault.kind] += 1
                    return
                self.not_reached[fault.kind] += 1

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

    async def _restart_postgres(self) -> None:
        """PostgreSQL stopped and started again, the outage noted for the
        takeovers it may hold up."""
        outage = _Outage(time.monotonic())
        self._outages.append(outage)
        try:
            await self.pipeline.infra.stop_postgres()
            await asyncio.sleep(self.rng.uniform(0.0, 3.0))
            await self.pipeline.infra.start_postgres()
        finally:
            outage.end = time.monotonic()

    # capture: the lease's holder dies, a standby takes over

    async def _holder(self, side: Side) -> Proc | None:
        """The process holding the side's lease; a moment without one (a
        takeover under way, an unexpected exit) is waited out."""
        t = self.pipeline.tuning
        holder: Proc | None = await self._until_value(
            lambda: self.pipeline.capture_holder(side),
            lambda h: h is not None,
            t.takeover_bound_s + t.takeover_margin_s,
        )
        return holder

    async def _kill_capture(self, side: Side, kind: str) -> None:
        """``kill -9`` of the process holding the side's lease; it comes back
        once another has taken the lease over, so it is the standby then."""
        async with self.locks[f"capture-{side}"]:
            for _ in range(_TRIES):
                # The bound is a standby's: one still starting (back from the
                # side's last fault, or waiting for a broker or database that is
                # away) is not standing by yet.
                ready = await self._until(self._all_started_up(self.pipeline.captures(side)), 120.0)
                holder = await self._holder(side)
                if holder is None or not ready:
                    self.not_reached[kind] += 1
                    continue
                self._note(f"kill -9 {holder.name}, holding {lease_name(side)}")
                died_at = time.monotonic()
                holder.kill9()
                await holder.wait_exit(30.0)
                await self._taken_over(side, holder, died_at, "kill -9")
                self.injected[kind] += 1
                return

    async def _crash_capture(self, side: Side, point: str, kind: str) -> None:
        """The holder of the side's lease dies at ``point``. The fault point
        is armed in a standby, which the holder then hands the lease to by
        stopping cleanly (and coming back as the standby): the armed process
        only passes the point once it holds the lease, and the one that takes
        over after its death is not armed."""
        p = self.pipeline
        t = p.tuning
        async with self.locks[f"capture-{side}"]:
            for _ in range(_TRIES):
                holder = await self._holder(side)
                standby = next((q for q in p.captures(side) if q is not holder), None)
                if holder is None or standby is None:
                    self.not_reached[kind] += 1
                    continue
                self._note(f"arm {standby.name} at {point}; {holder.name} hands it the lease")
                await standby.arm(point, 1, restart=False)
                await self._until(self._all_started_up([standby]), 120.0)
                handover_s = max(
                    self.plan.fault_point_timeout_s, t.takeover_bound_s + t.takeover_margin_s
                )
                # Its first poll may reach the point a moment after it took the
                # lease, before anyone saw it holding: its death is watched from now.
                died = asyncio.ensure_future(
                    self._died_at(standby, handover_s + self.plan.fault_point_timeout_s)
                )
                await holder.stop()
                handed = await self._until(self._holds_or_done(side, standby, died), handover_s)
                await holder.start()
                if not handed:
                    died.cancel()
                died_at = await died if handed else None
                standby.restart_after_fault = True
                if died_at is None:
                    self.not_reached[kind] += 1
                    self._note(f"{standby.name} did not reach {point} (handed over: {handed})")
                    await standby.disarm()
                    continue
                self._note(f"{standby.name} died at {point}")
                await self._taken_over(side, standby, died_at, "crash at a fault point")
                self.injected[kind] += 1
                return

    @staticmethod
    async def _died_at(proc: Proc, timeout_s: float) -> float | None:
        """When the armed ``proc`` died at its fault point, None if not within ``timeout_s``."""
        try:
            await asyncio.wait_for(proc.fired.wait(), timeout_s)
        except TimeoutError:
            return None
        return time.monotonic()

    @staticmethod
    def _all_started_up(procs: list[Proc]) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return all(q.started_up() for q in procs)

        return probe

    def _holds_or_done(
        self, side: Side, proc: Proc, done: asyncio.Future[float | None]
    ) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return done.done() or await self.pipeline.capture_holder(side) is proc

        return probe

    def _epoch_of(self, side: Side, proc: Proc) -> int:
        """The epoch of the last hold ``proc`` (its latest start) logged taking."""
        mine = f"{proc.name}#{proc.starts}"
        return max(
            (t.epoch for t in self.pipeline.lease_takes(side) if t.process == mine), default=0
        )

    async def _taken_over(self, side: Side, died: Proc, died_at: float, how: str) -> None:
        """Times the takeover of the side's lease after ``died``, its holder,
        died at ``died_at``: until a process logged taking a later epoch than
        the one ``died`` held (the database may have it taken and lost again
        before a look at it would see it). Then ``died`` comes back, a standby
        now; when there is no other instance to take over, it is brought back
        first."""
        p = self.pipeline
        t = p.tuning
        held = self._epoch_of(side, died)
        if not held:
            # Not logged (cut short by the kill): the row still names its hold.
            lease = await p.capture_lease(side)
            held = lease.epoch if lease is not None else 0
        died_wall = time.time() - (time.monotonic() - died_at)
        if not any(q is not died for q in p.captures(side)):
            await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            await died.start()
        seconds: float | None = None
        taken_at: datetime | None = None
        while True:
            deadline, during_db_restart = self._takeover_deadline(died_at)
            lease = await p.capture_lease_now(side, t.lease_renew_s)
            now = time.monotonic()
            if lease is not None and lease.holder is not None and lease.epoch > held:
                seconds, taken_at = now - died_at, lease.taken_at
                break
            if now > deadline + _TAKEOVER_WATCH_S:
                break
            await asyncio.sleep(_TAKEOVER_POLL_S)
        if seconds is not None:
            # Its log line comes a moment after the database answered it.
            take = await self._until_value(
                lambda: self._first_take_after(side, held), bool, _TAKEOVER_LOG_S
            )
            if take is not None:
                seconds = take.at.timestamp() - died_wall
        checkpointed = (
            asyncio.ensure_future(self._checkpointed(side, taken_at, died_at))
            if taken_at is not None
            else None
        )
        if not died.running:
            await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            await died.start()
        takeover = Takeover(
            side,
            how,
            seconds,
            round(deadline - died_at, 2),
            await checkpointed if checkpointed is not None else None,
            during_db_restart,
        )
        self.takeovers.append(takeover)
        took = "never" if seconds is None else f"in {seconds:.1f}s"
        self._note(f"{lease_name(side)} taken over {took} (bound {takeover.bound_s:.1f}s)")

    async def _first_take_after(self, side: Side, epoch: int) -> LeaseTake | None:
        return next((t for t in self.pipeline.lease_takes(side) if t.epoch > epoch), None)

    def _takeover_deadline(self, died_at: float) -> tuple[float, bool]:
        """The latest a standby may take over after a holder died at
        ``died_at`` (``runtime.lease``: within ``ttl + renew`` of its last
        renewal, which came before its death, and a standby tries again within
        ``renew`` of PostgreSQL's return), plus the suite's margin; and whether
        a restart of PostgreSQL moved it."""
        t = self.pipeline.tuning
        deadline = died_at + t.takeover_bound_s
        moved = False
        for outage in self._outages:
            end = time.monotonic() if outage.end is None else outage.end
            if end > died_at and outage.start < deadline:
                moved = True
                deadline = max(deadline, end + t.lease_renew_s)
        return deadline + t.takeover_margin_s, moved

    async def _checkpointed(self, side: Side, taken_at: datetime, died_at: float) -> float | None:
        """Seconds from ``died_at`` until the side's captures wrote a checkpoint
        after the lease was taken over at ``taken_at`` (the database's clock)."""

        async def written() -> bool:
            rows = await self.pipeline.query(
                "SELECT max(updated_at) AS t FROM capture_checkpoints WHERE side = $1", side
            )
            return rows[0]["t"] is not None and rows[0]["t"] > taken_at

        if await self._until_value(written, bool, _CHECKPOINT_WATCH_S, every_s=_TAKEOVER_POLL_S):
            return time.monotonic() - died_at
        return None

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


def _mapping_of(fault: Fault) -> str:
    """The mapping of the apply instance a fault targets (``apply-<mapping>-<n>``)."""
    return fault.target.split("-")[1]
