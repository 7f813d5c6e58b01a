"""The invariants of DESIGN.md, checked on the world a schedule left behind
once it has settled: what the sides hold against what the users did, and
tablesync's own state against both.

The job counters are held to the same two rules as the fault suite's
(``tests/faults/verify.py``): each change event on the mapping's topics is
counted once, and the rows of each side add up with what the users did and
what the jobs say tablesync inserted and deleted. Both read every job of
the mapping but the operator's replays: the schedule's final replay of
every event runs after these checks, and is held to counting nothing but
*unchanged* on its own (``runner._replay_changes_nothing``); the fault suite
runs no replay. What no event of a partition counts as its own (a retried
record, the insert of a create a crash interrupted) counts in the
pseudo-partition ``(retry)``, which no topic holds: it adds to the rows, not
to a partition's events, as in the fault suite. The simulator publishes no
poison, so every change event on a topic is one of the mapping's; and its
users' deletes never fail half-way, so none is unclear (``users.Ledger``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from tablesync.core import filters
from tablesync.core.events import RecordChanged, Side, other_side
from tablesync.core.mappings import direction_of
from tablesync.core.records import Row
from tablesync.core.stored import JobTotals, Selection
from tablesync.ports.state import StateStores
from tests.simulation.users import FIELDS, MARKER, TABLE, Ledger, Truth, UserSide

__all__ = ["Changes", "check"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
MAPPING = "CUSTOMER"
_OUTCOMES = ("inserted", "modified", "unchanged", "skipped", "failed", "pending")

Changes = Mapping[tuple[str, int], Sequence[RecordChanged]]
"""The change events the log holds on the mapping's topics, by topic and partition."""


def _marker(s: Side, row: Row) -> str:
    value = row.fields.get(MARKER[s])
    return value.lower() if isinstance(value, str) else ""


async def check(
    truth: Truth,
    sides: dict[Side, UserSide],
    stores: StateStores,
    open_intents: Callable[[], Sequence[str]],
    changes: Changes,
) -> list[str]:
    """Every violation found, as one line each (empty: all invariants hold)."""
    found: list[str] = []
    rows: dict[Side, dict[str, list[Row]]] = {s: {} for s in _SIDES}
    for s in _SIDES:
        for row in sides[s].rows(TABLE[s]):
            rows[s].setdefault(_marker(s, row), []).append(row)
    known = {m.lower() for m in truth.records}
    for s in _SIDES:
        for marker, group in rows[s].items():
            if marker not in known:
                found.append(f"unknown record on {s}: marker {marker!r} (made by nobody)")
            elif len(group) > 1:
                found.append(f"duplicate: {len(group)} records {marker} on {s}")  # invariant 3
    for record in truth.records.values():
        m = record.marker.lower()
        here = {s: rows[s].get(m, []) for s in _SIDES}
        if record.deleted:
            for s in _SIDES:
                if here[s]:
                    found.append(f"deleted {record.marker} still exists on {s}")
            continue
        if not (here["bc"] and here["dataverse"]):
            missing = [s for s in _SIDES if not here[s]]
            found.append(f"lost: {record.marker} never reached {', '.join(missing)}")
            continue
        bc, dv = here["bc"][0], here["dataverse"][0]
        coupling = (await stores.couplings.by_ids(MAPPING, "bc", [bc.id])).get(bc.id)
        if coupling is None or coupling.dv_id.lower() != dv.id.lower():
            found.append(f"{record.marker}: bc {bc.id} and dataverse {dv.id} are not coupled")
        for f, names in FIELDS.items():
            values = (bc.fields.get(names["bc"]), dv.fields.get(names["dataverse"]))
            if values[0] != values[1]:
                found.append(
                    f"{record.marker}.{f}: sides differ, bc {values[0]!r} dv {values[1]!r}"
                )
                continue
            if record.home is not None and values[0] != record.last[f]:
                # Invariant 9: only the home side's users edit this record.
                found.append(
                    f"lost edit: {record.marker}.{f} is {values[0]!r}, "
                    f"its last edit on {record.home} was {record.last[f]!r}"
                )
            elif values[0] not in record.written.get(f, set()):
                found.append(f"{record.marker}.{f} is {values[0]!r}, which no user wrote")
    left = open_intents()
    if left:
        found.append(f"intents left open: {', '.join(left[:5])}")
    problems = await stores.problems.records(Selection(everything=True))
    for p in problems:
        found.append(
            f"record not synced: {p.mapping} {p.source_side} {p.source_id} "
            f"{p.status} ({p.message[:80]})"
        )
    jobs = await _counted_jobs(stores)
    found += _rows_add_up(truth.ledger, {s: sum(map(len, rows[s].values())) for s in _SIDES}, jobs)
    found += await _each_event_counted_once(stores, jobs, changes)
    return found


async def _counted_jobs(stores: StateStores) -> list[JobTotals]:
    jobs = await stores.jobs.listing(mapping=MAPPING, include_empty_continuous=True, limit=10**6)
    return [j for j in jobs if j.kind != "replay"]


def _rows_add_up(ledger: Ledger, now: Mapping[Side, int], jobs: Sequence[JobTotals]) -> list[str]:
    """Per side: rows now = rows before + created by the users + inserted by
    the direction that writes there - deleted by it - deleted by the users;
    and that direction deleted no more than the users deleted on the other
    side (nothing is deleted because it only looked gone)."""
    found = []
    for side in _SIDES:
        direction = direction_of(other_side(side))
        counted: Counter[str] = Counter()
        for job in jobs:
            if job.direction == direction:
                counted.update(job.counts)
        inserted, deleted = counted["inserted"], counted["deleted"]
        asked = ledger.deleted[other_side(side)]
        if deleted > asked:
            found.append(
                f"counters: {side}: {deleted} deleted by {MAPPING} {direction}, "
                f"but the users deleted only {asked} on {other_side(side)}"
            )
        expected = (
            ledger.before[side] + ledger.created[side] + inserted - deleted - ledger.deleted[side]
        )
        if now[side] != expected:
            found.append(
                f"counters: {side}: {now[side]} rows, but {ledger.before[side]} before "
                f"+ {ledger.created[side]} created by the users "
                f"+ {inserted} inserted by {MAPPING} {direction} - {deleted} deleted by it "
                f"- {ledger.deleted[side]} deleted by the users = {expected}"
            )
    return found


async def _each_event_counted_once(
    stores: StateStores, jobs: Sequence[JobTotals], changes: Changes
) -> list[str]:
    """Per topic partition, the six outcome counters never exceed the change
    events in the mapping's scope there, and with deletions and uncouplings
    they reach it."""
    mapping = (await stores.mappings.load()).get(MAPPING)
    found = []
    for (topic, partition), events in sorted(changes.items()):
        upserts = deletes = 0
        for e in events:
            if e.op == "delete":
                deletes += 1
            elif filters.evaluate(
                mapping.filter(e.side), e.fields, ignore_case=e.side == "dataverse"
            ):
                upserts += 1
        counted: Counter[str] = Counter()
        for job in jobs:
            counted.update(await stores.jobs.partition_counts(job.job_id, topic, partition))
        outcomes = sum(counted[c] for c in _OUTCOMES)
        others = counted["deleted"] + counted["uncoupled"]
        where = f"counters: {MAPPING} {topic}[{partition}]"
        if outcomes > upserts:
            found.append(
                f"{where}: {outcomes} outcomes counted for {upserts} changes in scope "
                "(events counted more than once)"
            )
        elif outcomes + others < upserts:
            found.append(f"{where}: {upserts} changes in scope, only {outcomes + others} counted")
        if outcomes + counted["deleted"] > upserts + deletes:
            found.append(f"{where}: more outcomes than events")
    return found
