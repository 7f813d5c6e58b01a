"""One fault run from start to figures: users change both sides while the
schedule breaks things and an operator asks for "synchronize modified
records" now and then (so the coordinator is killed mid-run, too); then the
faults stop, everything comes back, the pipeline settles and both sides are
compared."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from tablesync.core.events import Side
from tests.faults.pipeline import Pipeline, lease_name, wait_until
from tests.faults.procs import Exit
from tests.faults.schedule import KINDS, OPERATOR_MAPPING, Injector, Plan, Takeover, plan_faults
from tests.faults.scope import TABLES
from tests.faults.settle import SettleReport, settle
from tests.faults.sides import id_field
from tests.faults.verify import Findings, baseline, rejected_ids, verify
from tests.faults.workload import Driver, Ledger

__all__ = ["Figures", "lease_takes", "run_chaos"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")


@dataclass
class Figures:
    plan: str
    seed: int
    seconds: float = 0.0
    ledger: Ledger = field(default_factory=Ledger)
    faults: Counter[str] = field(default_factory=Counter)
    not_reached: Counter[str] = field(default_factory=Counter)
    observed: Counter[str] = field(default_factory=Counter)
    apply_instances: int = 1
    capture_instances: int = 1
    lease_ttl_s: float = 0.0
    lease_renew_s: float = 0.0
    takeover_margin_s: float = 0.0
    takeovers: list[Takeover] = field(default_factory=list)
    # Per side, how often its lease was taken; and what is wrong with those takes.
    lease_takes: dict[str, int] = field(default_factory=dict)
    lease_problems: list[str] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)
    settle: SettleReport | None = None
    echoes: set[str] = field(default_factory=set)
    findings: Findings = field(default_factory=Findings)
    timeline: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.findings.lost)

    @property
    def duplicated(self) -> int:
        return self.findings.extra_records

    def render(self) -> str:
        f = self.findings
        settled = self.settle
        lines = [
            f"fault suite ({self.plan}) seed={self.seed} "
            f"(again: TABLESYNC_FAULT_SEED={self.seed}) took {self.seconds:.0f} s",
            f"apply instances per mapping: {self.apply_instances}",
            f"capture instances per side: {self.capture_instances} (one holds the side's lease, "
            f"the others stand by); lease {self.lease_ttl_s:g} s, renewed every "
            f"{self.lease_renew_s:g} s",
            f"changes made: {self.ledger.total}",
            *(f"    {n:6d}  {kind}" for kind, n in sorted(self.ledger.changes.items())),
            "conflicting edits: "
            + ", ".join(f"{m} {n}" for m, n in sorted(self.ledger.conflicts.items())),
            f"faults injected: {sum(self.faults.values())}",
            *(f"    {self.faults[kind]:6d}  {kind}" for kind in KINDS),
        ]
        if self.observed:
            lines.append("seen of the faults:")
            lines += [f"    {n:6d}  {what}" for what, n in sorted(self.observed.items())]
        if self.not_reached:
            lines.append(
                "faults that did not take in time (undone, tried again): "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.not_reached.items()))
            )
        lines += self._render_takeovers()
        lines.append(
            "operator runs: " + ", ".join(f"{k} {n}" for k, n in sorted(self.runs.items()))
        )
        running = [e for e in self.exits if e.running]
        lines.append(
            f"unexpected process exits (restarted): {len(running)} while running, "
            f"{len(self.exits) - len(running)} at start-up (a broker or database was down)"
        )
        lines += [f"    {e.at_s:7.1f}s {e.name} exit {e.code}: {e.cause}" for e in running[:20]]
        if settled is not None:
            state = "settled" if settled.settled else "NOT settled"
            lines.append(f"{state} after {settled.seconds:.0f} s")
            lines += [f"    {r}" for r in settled.reasons[:10]]
        lines += [
            f"records compared: {f.compared}",
            f"lost: {self.lost}",
            f"duplicated: {self.duplicated}",
            f"echoes: {len(self.echoes)}",
            f"dead-lettered: {f.dead_lettered} of "
            f"{self.faults['poison: undecodable bytes'] + self.faults['poison: unknown table']}"
            " poison events",
            f"rejected by the destination: {self.faults['poison: rejected by the destination']}"
            f", reported wrongly: {len(f.rejected)}",
            f"counter mismatches: {len(f.counters)}",
        ]
        problems = f.problems() + [f"echo: {e}" for e in sorted(self.echoes)]
        if problems:
            lines.append("problems:")
            lines += [f"    {x}" for x in problems[:60]]
            if len(problems) > 60:
                lines.append(f"    ... and {len(problems) - 60} more")
        return "\n".join(lines)

    def _render_takeovers(self) -> list[str]:
        t = self.takeovers
        how = Counter(x.died for x in t)
        bound = self.lease_ttl_s + self.lease_renew_s
        lines = [
            f"standby takeovers after the holder died: {len(t)} ("
            + ", ".join(f"{d} {n}" for d, n in sorted(how.items()))
            + f"); bound ttl + renew = {bound:g} s, + {self.takeover_margin_s:g} s margin"
        ]
        taken = [x.seconds for x in t if x.seconds is not None]
        if taken:
            lines.append(
                f"    until another took the lease: longest {max(taken):.1f} s, "
                f"median {statistics.median(taken):.1f} s from the death"
            )
        written = [x.checkpointed_s for x in t if x.checkpointed_s is not None]
        if written:
            lines.append(
                f"    until it had checkpointed: longest {max(written):.1f} s, "
                f"median {statistics.median(written):.1f} s"
                + (f" ({len(t) - len(written)} not seen)" if len(written) < len(t) else "")
            )
        moved = sum(1 for x in t if x.during_db_restart)
        if moved:
            lines.append(
                f"    {moved} overlapped a PostgreSQL restart: the bound runs from its end too"
            )
        for x in t:
            if not x.in_time:
                took = "never" if x.seconds is None else f"{x.seconds:.1f} s"
                lines.append(f"    LATE: capture {x.side} after {x.died}: {took} > {x.bound_s} s")
        lines.append(
            "lease takes: "
            + ", ".join(f"{side} {n}" for side, n in sorted(self.lease_takes.items()))
            + ("; each epoch by one process" if not self.lease_problems else "")
        )
        lines += [f"    {problem}" for problem in self.lease_problems]
        return lines

    def as_json(self) -> str:
        return json.dumps(
            {
                "plan": self.plan,
                "seed": self.seed,
                "seconds": round(self.seconds, 1),
                "changes": self.ledger.total,
                "changes_by_kind": dict(self.ledger.changes),
                "apply_instances": self.apply_instances,
                "capture_instances": self.capture_instances,
                "takeovers": [asdict(x) for x in self.takeovers],
                "lease_takes": self.lease_takes,
                "lease_problems": self.lease_problems,
                "faults": dict(self.faults),
                "faults_not_reached": dict(self.not_reached),
                "observed": dict(self.observed),
                "unexpected_exits": [
                    {
                        "name": e.name,
                        "code": e.code,
                        "at_s": round(e.at_s, 1),
                        "running": e.running,
                        "cause": e.cause,
                    }
                    for e in self.exits
                ],
                "lost": self.findings.lost,
                "duplicated": self.findings.duplicated,
                "extra_records": self.findings.extra_records,
                "echoes": sorted(self.echoes),
                "dead_lettered": self.findings.dead_lettered,
                "counters": self.findings.counters,
                "rejected": self.findings.rejected,
                "dead_letters": self.findings.dead_letters,
                "timeline": self.timeline,
            },
            indent=2,
        )


async def run_chaos(p: Pipeline, plan: Plan, seed: int) -> Figures:
    """The fault run on a started pipeline; its figures are also written to the run directory."""
    started = time.monotonic()
    rng = random.Random(seed)
    t = p.tuning
    figures = Figures(
        plan.name,
        seed,
        apply_instances=t.apply_instances,
        capture_instances=t.capture_instances,
        lease_ttl_s=t.lease_ttl_s,
        lease_renew_s=t.lease_renew_s,
        takeover_margin_s=t.takeover_margin_s,
    )
    try:
        await _run(p, plan, rng, figures)
    finally:
        figures.seconds = time.monotonic() - started
        figures.exits = list(p.supervisor.exits)
        (p.run_dir / "figures.txt").write_text(figures.render() + "\n")
        (p.run_dir / "figures.json").write_text(figures.as_json() + "\n")
    return figures


async def _run(p: Pipeline, plan: Plan, rng: random.Random, figures: Figures) -> None:
    driver = Driver(p.apis, random.Random(rng.random()), p.is_coupled)
    figures.ledger = driver.ledger
    before = await baseline(p)
    injector = Injector(p, driver, plan, random.Random(rng.random()))
    faults = plan_faults(plan, random.Random(rng.random()))
    stop = asyncio.Event()
    users = asyncio.create_task(
        driver.run(stop, workers=plan.workers, rate_per_s=plan.rate_per_s, until=10**9)
    )
    operator = asyncio.create_task(_operator(p, plan, injector, stop, figures))
    try:
        await injector.run(faults)
        await wait_until(
            lambda: _enough(driver, plan, users),
            timeout_s=plan.fault_phase_s,
            what=f"{plan.min_changes} changes",
            every_s=1.0,
        )
    finally:
        stop.set()
        await asyncio.gather(users, operator, return_exceptions=True)
        figures.faults = injector.injected
        figures.not_reached = injector.not_reached
        figures.observed = injector.observed
        figures.timeline = injector.timeline
        figures.takeovers = injector.takeovers
    users.result()
    operator.result()
    # The faults are over: everything comes back and nothing is throttled any more.
    await p.infra.ensure_up()
    await p.ensure_running()
    for api in p.apis.values():
        await api.clear_faults()
    poison_ids = rejected_ids(driver)
    figures.settle = await settle(
        p,
        timeout_s=plan.settle_timeout_s,
        stable_window_s=plan.stable_window_s,
        poison_ids=poison_ids,
    )
    if figures.settle.settled:
        figures.echoes = await _watch_for_echoes(p, plan, poison_ids)
    else:
        figures.echoes = figures.settle.moving
    figures.findings = await verify(p, driver, injector.poison, before)
    figures.lease_takes, figures.lease_problems = lease_takes(p)
    await _dump_state(p, driver)


def lease_takes(p: Pipeline) -> tuple[dict[str, int], list[str]]:
    """How often each side's lease was taken, from its capture processes' logs,
    and what is wrong with those takes. The database gives a new epoch only to
    a lease that expired or was released, so one epoch taken by two processes,
    or an epoch lower than one taken before it, means two captures of a side
    worked at once."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    for side in _SIDES:
        takes = p.lease_takes(side)
        counts[side] = len(takes)
        by_epoch: defaultdict[int, set[str]] = defaultdict(set)
        for take in takes:
            by_epoch[take.epoch].add(take.process)
        problems += [
            f"{lease_name(side)} epoch {epoch} taken by {', '.join(sorted(who))}"
            for epoch, who in sorted(by_epoch.items())
            if len(who) > 1
        ]
        for before, take in itertools.pairwise(takes):
            if take.epoch < before.epoch:
                problems.append(
                    f"{lease_name(side)} epoch {take.epoch} taken by {take.process} at "
                    f"{take.at:%H:%M:%S.%f}, after epoch {before.epoch} by {before.process}"
                )
    return counts, problems


async def _dump_state(p: Pipeline, driver: Driver) -> None:
    """Both sides' ids, the couplings, the job counters and what the users did,
    into the run's directory: what a failed comparison is read against."""
    sides: dict[str, Any] = {}
    for table in TABLES:
        for side in ("bc", "dataverse"):
            entity_set = table.entity_set(side)
            rows = await p.apis[side].rows(entity_set)  # type: ignore[index]
            sides[f"{side}.{entity_set}"] = sorted(
                [str(r[id_field(side, entity_set)]), table.marker_of(side, r)]  # type: ignore[arg-type]
                for r in rows
            )
    queries = {
        "couplings": "SELECT mapping, bc_id::text, dv_id::text FROM couplings ORDER BY 1, 2",
        "record_status": "SELECT mapping, source_side, source_id, status, message "
        "FROM record_status",
        "write_intents": "SELECT * FROM write_intents",
        "create_intents": "SELECT * FROM create_intents",
        "jobs": "SELECT j.job_id::text, j.mapping, j.direction, j.kind, "
        "sum(p.inserted) AS inserted, sum(p.modified) AS modified, "
        "sum(p.deleted) AS deleted, sum(p.coupled) AS coupled, "
        "sum(p.uncoupled) AS uncoupled FROM jobs j JOIN job_partitions p USING (job_id) "
        "GROUP BY 1, 2, 3, 4 ORDER BY 2, 3",
    }
    state: dict[str, Any] = {"sides": sides}
    for name, sql in queries.items():
        state[name] = [dict(r) for r in await p.query(sql)]
    state["users"] = [
        {
            "marker": r.marker,
            "home": r.home,
            "ids": r.ids,
            "deleted": r.deleted,
            "vanished": r.vanished,
            "poison": r.poison,
        }
        for r in driver.recs
    ]
    (p.run_dir / "state.json").write_text(json.dumps(state, indent=1, default=str) + "\n")


async def _enough(driver: Driver, plan: Plan, users: asyncio.Task[None]) -> bool:
    if users.done():
        users.result()
    return driver.ledger.total >= plan.min_changes


async def _watch_for_echoes(p: Pipeline, plan: Plan, poison_ids: set[str]) -> set[str]:
    """After settling, versions must stay where they are: a record tablesync keeps
    rewriting with nobody changing anything is ping-pong."""
    again = await settle(
        p,
        timeout_s=plan.stable_window_s * 3,
        stable_window_s=plan.stable_window_s,
        poison_ids=poison_ids,
    )
    return again.moving if again.settled else again.moving | {"(did not stay settled)"}


async def _operator(
    p: Pipeline, plan: Plan, injector: Injector, stop: asyncio.Event, figures: Figures
) -> None:
    """Asks for "synchronize modified records" of one mapping now and then.
    Only CUSTOMER: a run re-reads what changed, which would hide a change
    capture lost, so CONTACTS is left to continuous capture alone."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=plan.sync_every_s)
            return
        except TimeoutError:
            pass
        # Not while the broker or PostgreSQL restarts: the request would be
        # recorded without being sent, and stay "requested" for ever.
        async with injector.locks["infra"]:
            code, _ = await p.cli(["sync-modified", "--mapping", OPERATOR_MAPPING, "--json"])
        figures.runs["requested" if code == 0 else f"refused (exit {code})"] += 1
