"""Comparing both sides once the pipeline has settled.

- **lost**: a record in scope without a coupled counterpart in scope; a
  counterpart whose values differ; a record whose values are not those of
  the suite's last write; a deleted record that still exists on a side; a
  record that disappeared though nobody deleted it.
- **duplicated**: two records with one marker on one side, or a record in
  scope that the suite never made (nor tablesync from one the suite made).
- **counters**: the job counters against what is seen. Per table, rows now =
  rows before + created by the users + inserted by tablesync (the job
  direction that writes to that table) - deleted by it - deleted by the
  users; and tablesync deleted no more there than the users deleted on the
  other side (nothing is deleted because it only looked gone). Per source
  partition, every change event in scope is counted once: the six outcome
  counters never exceed the number of such events, and with deletions and
  uncouplings they reach it.
- **rejected**: each record the destination refused is skipped with a job
  error that says why, and has no counterpart.
- **dead letters**: every poison event is on the dead-letter topic with a
  reason, and nothing else is."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from tablesync.adapters.avro import Codec
from tablesync.core import filters
from tablesync.core.events import RecordChanged, Side, other_side
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.core.mappings import MappingSet
from tablesync.errors import DecodeError
from tests.faults.broker import Poison, dead_letters, read_topic
from tests.faults.pipeline import Pipeline
from tests.faults.scope import CONTACTS, CUSTOMER, MAPPINGS_DOCUMENT, TABLES, Table
from tests.faults.sides import id_field
from tests.faults.workload import Driver

__all__ = ["Baseline", "Findings", "baseline", "rejected_ids", "verify"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
_OUTCOMES = ("inserted", "modified", "unchanged", "skipped", "failed", "pending")
_CODEC = Codec()


def mapping_set() -> MappingSet:
    return build_mappings(MAPPINGS_DOCUMENT, catalog_tables())


@dataclass(frozen=True)
class Baseline:
    """Rows per (side, entity set) before the users start."""

    rows: dict[tuple[Side, str], int]


async def baseline(p: Pipeline) -> Baseline:
    rows: dict[tuple[Side, str], int] = {}
    for table in TABLES:
        for side in _SIDES:
            rows[(side, table.entity_set(side))] = len(
                await p.apis[side].rows(table.entity_set(side))
            )
    return Baseline(rows)


@dataclass
class Findings:
    # Per record (mapping and marker), what is wrong with it.
    lost: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    duplicated: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    extra_records: int = 0
    counters: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    dead_lettered: int = 0
    compared: int = 0

    def lose(self, table: Table, marker: str, reason: str) -> None:
        self.lost[f"{table.mapping} {marker.lower()}"].append(reason)

    def duplicate(self, table: Table, marker: str, extra: int, reason: str) -> None:
        self.duplicated[f"{table.mapping} {marker.lower()}"].append(reason)
        self.extra_records += extra

    def problems(self) -> list[str]:
        return [
            *(f"lost: {k}: {'; '.join(v)}" for k, v in sorted(self.lost.items())),
            *(f"duplicated: {k}: {'; '.join(v)}" for k, v in sorted(self.duplicated.items())),
            *(f"counters: {x}" for x in self.counters),
            *(f"rejected record: {x}" for x in self.rejected),
            *(f"dead letters: {x}" for x in self.dead_letters),
        ]


@dataclass
class _Sides:
    table: Table
    rows: dict[Side, list[dict[str, Any]]]
    by_id: dict[Side, dict[str, dict[str, Any]]]
    by_marker: dict[Side, dict[str, list[dict[str, Any]]]]
    in_scope: dict[Side, list[dict[str, Any]]]
    coupled: dict[Side, dict[str, str]]


async def verify(p: Pipeline, driver: Driver, poison: list[Poison], before: Baseline) -> Findings:
    found = Findings()
    mappings = mapping_set()
    seen: dict[str, _Sides] = {}
    for table in TABLES:
        seen[table.mapping] = await _read(p, table, mappings)
    for table in TABLES:
        _compare(seen[table.mapping], seen, driver, found)
    _check_model(seen, driver, found)
    await _check_rejected(p, seen[CUSTOMER.mapping], driver, found)
    await _check_rows_add_up(p, seen, driver, before, found)
    await _check_each_event_counted_once(p, mappings, found)
    await _check_dead_letters(p, poison, found)
    return found


async def _read(p: Pipeline, table: Table, mappings: MappingSet) -> _Sides:
    mapping = mappings.get(table.mapping)
    rows: dict[Side, list[dict[str, Any]]] = {}
    by_id: dict[Side, dict[str, dict[str, Any]]] = {}
    by_marker: dict[Side, dict[str, list[dict[str, Any]]]] = {}
    in_scope: dict[Side, list[dict[str, Any]]] = {}
    for side in _SIDES:
        entity_set = table.entity_set(side)
        rows[side] = await p.apis[side].rows(entity_set)
        by_id[side] = {str(r[id_field(side, entity_set)]).lower(): r for r in rows[side]}
        markers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows[side]:
            markers[table.marker_of(side, r)].append(r)
        by_marker[side] = markers
        expr = mapping.filter(side)
        in_scope[side] = [
            r for r in rows[side] if filters.evaluate(expr, r, ignore_case=side == "dataverse")
        ]
    couplings = await p.query(
        "SELECT bc_id::text AS bc, dv_id::text AS dv FROM couplings WHERE mapping = $1",
        table.mapping,
    )
    coupled: dict[Side, dict[str, str]] = {
        "bc": {r["bc"]: r["dv"] for r in couplings},
        "dataverse": {r["dv"]: r["bc"] for r in couplings},
    }
    return _Sides(table, rows, by_id, by_marker, in_scope, coupled)


def _norm(value: object) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def _compare(s: _Sides, seen: dict[str, _Sides], driver: Driver, found: Findings) -> None:
    table = s.table
    poison = {r.marker.lower() for r in driver.recs if r.poison}
    known = {r.marker.lower() for r in driver.recs}
    for side in _SIDES:
        for marker, rows in s.by_marker[side].items():
            if marker and len(rows) > 1:
                found.duplicate(table, marker, len(rows) - 1, f"{len(rows)} records in {side}")
        for row in s.in_scope[side]:
            marker = table.marker_of(side, row)
            if marker not in known:
                found.duplicate(table, marker or "?", 1, f"in {side}, made by nobody")
            rid = str(row[id_field(side, table.entity_set(side))]).lower()
            other = other_side(side)
            partner_id = s.coupled[side].get(rid)
            if partner_id is None:
                if marker not in poison:
                    found.lose(table, marker, f"in {side}, no coupled counterpart")
                continue
            partner = s.by_id[other].get(partner_id)
            if partner is None:
                found.lose(table, marker, f"in {side}, its coupled counterpart is gone")
                continue
            if side == "dataverse":
                continue  # each coupled pair is compared once, from its BC record
            found.compared += 1
            _compare_values(s, row, partner, seen, found)


def _compare_values(
    s: _Sides,
    bc: dict[str, Any],
    dv: dict[str, Any],
    seen: dict[str, _Sides],
    found: Findings,
) -> None:
    table = s.table
    marker = table.marker_of("bc", bc)
    if marker != table.marker_of("dataverse", dv):
        found.lose(table, marker, f"coupled to {table.marker_of('dataverse', dv)}")
    for f in table.editable:
        for dv_field in (f.dv, *f.dv_also):
            if _norm(bc.get(f.bc)) != _norm(dv.get(dv_field)):
                found.lose(
                    table, marker, f"{f.bc}={bc.get(f.bc)!r} but {dv_field}={dv.get(dv_field)!r}"
                )
    if table is CONTACTS:
        customers = seen[CUSTOMER.mapping]
        parent = str(dv.get("_parentcustomerid_value") or "").lower()
        parent_bc = customers.by_id["bc"].get(customers.coupled["dataverse"].get(parent, ""))
        number = _norm(parent_bc.get("number")) if parent_bc else "(no coupled account)"
        if number.lower() != _norm(bc.get("companyNumber")).lower():
            found.lose(table, marker, f"companyNumber {bc.get('companyNumber')!r} vs {number!r}")


def _check_model(seen: dict[str, _Sides], driver: Driver, found: Findings) -> None:
    """Every record the users made ends as their last write says."""
    for rec in driver.recs:
        if rec.poison:
            continue
        s = seen[rec.table.mapping]
        table = rec.table
        marker = rec.marker.lower()
        present = {side: s.by_marker[side].get(marker, []) for side in _SIDES}
        if rec.vanished:
            found.lose(table, marker, "deleted by tablesync though nobody deleted it")
        elif rec.deleted:
            where = [side for side in _SIDES if present[side]]
            if where:
                found.lose(table, marker, f"deleted, yet still in {', '.join(where)}")
        else:
            for side in _SIDES:
                if not present[side]:
                    found.lose(table, marker, f"missing in {side}")
                    continue
                row = present[side][0]
                for f in rec.table.editable:
                    want = rec.expected.get(f.name, "")
                    if _norm(row.get(f.on(side))) != want:
                        kind = "conflict-edited" if rec.conflict else f"edited in {rec.home}"
                        found.lose(
                            table,
                            marker,
                            f"({kind}) {side} {f.on(side)}={row.get(f.on(side))!r}, "
                            f"the last write was {want!r}",
                        )


async def _check_rejected(p: Pipeline, s: _Sides, driver: Driver, found: Findings) -> None:
    for rec in (r for r in driver.recs if r.poison):
        bc_id = rec.ids.get("bc", "").lower()
        if bc_id in s.coupled["bc"]:
            found.rejected.append(f"{rec.marker} is coupled, yet Dataverse must refuse it")
            continue
        status = await p.query(
            "SELECT status, message FROM record_status WHERE mapping = $1 AND source_id = $2",
            rec.table.mapping,
            bc_id,
        )
        errors = await p.query(
            "SELECT message FROM job_errors WHERE mapping = $1 AND source_id = $2",
            rec.table.mapping,
            bc_id,
        )
        if not status or status[0]["status"] != "skipped":
            found.rejected.append(f"{rec.marker} is not skipped: {[dict(r) for r in status]}")
        if not any("already exists" in e["message"] or "412" in e["message"] for e in errors):
            messages = [e["message"] for e in errors]
            found.rejected.append(f"{rec.marker} has no job error naming the duplicate: {messages}")


async def _counter_sums(p: Pipeline) -> dict[tuple[str, str], dict[str, int]]:
    rows = await p.query(
        "SELECT j.mapping, j.direction, sum(p.inserted) AS inserted, sum(p.deleted) AS deleted "
        "FROM jobs j JOIN job_partitions p USING (job_id) GROUP BY j.mapping, j.direction"
    )
    return {
        (r["mapping"], r["direction"]): {
            "inserted": int(r["inserted"] or 0),
            "deleted": int(r["deleted"] or 0),
        }
        for r in rows
    }


async def _check_rows_add_up(
    p: Pipeline, seen: dict[str, _Sides], driver: Driver, before: Baseline, found: Findings
) -> None:
    sums = await _counter_sums(p)
    ledger = driver.ledger
    for table in TABLES:
        for side in _SIDES:
            entity_set = table.entity_set(side)
            direction = "to_integration" if side == "dataverse" else "from_integration"
            counted = sums.get((table.mapping, direction), {"inserted": 0, "deleted": 0})
            key = (side, entity_set)
            now = len(seen[table.mapping].rows[side])
            expected = (
                before.rows[key]
                + ledger.created[key]
                + counted["inserted"]
                - counted["deleted"]
                - ledger.deleted[key]
            )
            unclear = ledger.ambiguous_deletes[key]
            # Tablesync deletes only what a user deleted on the other side: a deletion
            # more is a record that a short read or a lost event made look deleted.
            source = (other_side(side), table.entity_set(other_side(side)))
            asked = ledger.deleted[source] + ledger.ambiguous_deletes[source]
            if counted["deleted"] > asked:
                found.counters.append(
                    f"{side} {entity_set}: {counted['deleted']} deleted by {table.mapping} "
                    f"{direction}, but the users deleted only {asked} of "
                    f"{source[0]} {source[1]}"
                )
            if not expected - unclear <= now <= expected:
                found.counters.append(
                    f"{side} {entity_set}: {now} rows, but {before.rows[key]} before "
                    f"+ {ledger.created[key]} created by the users "
                    f"+ {counted['inserted']} inserted by {table.mapping} {direction} "
                    f"- {counted['deleted']} deleted by it - {ledger.deleted[key]} deleted by "
                    f"the users (- up to {unclear} whose delete was unclear) = {expected}"
                )


async def _check_each_event_counted_once(
    p: Pipeline, mappings: MappingSet, found: Findings
) -> None:
    rows = await p.query(
        "SELECT j.mapping, p.topic, p.partition, "
        + ", ".join(f"sum(p.{c}) AS {c}" for c in (*_OUTCOMES, "deleted", "uncoupled"))
        + " FROM jobs j JOIN job_partitions p USING (job_id)"
        + " GROUP BY j.mapping, p.topic, p.partition"
    )
    counted = {(r["mapping"], r["topic"], r["partition"]): r for r in rows}
    for table in TABLES:
        mapping = mappings.get(table.mapping)
        for side in _SIDES:
            topic = p.topics.cdc(side, table.entity_set(side))
            for partition, values in (await read_topic(p.infra.bootstrap, topic)).items():
                upserts, deletes = _events_in_scope(values, side, table, mapping)
                row = counted.get((table.mapping, topic, partition))
                outcomes = sum(int(row[c] or 0) for c in _OUTCOMES) if row else 0
                others = int(row["deleted"] or 0) + int(row["uncoupled"] or 0) if row else 0
                where = f"{table.mapping} {topic}[{partition}]"
                if outcomes > upserts:
                    found.counters.append(
                        f"{where}: {outcomes} outcomes counted for {upserts} changes in scope "
                        "(events counted more than once)"
                    )
                elif outcomes + others < upserts:
                    found.counters.append(
                        f"{where}: {upserts} changes in scope, only {outcomes + others} counted"
                    )
                if outcomes + int(row["deleted"] or 0 if row else 0) > upserts + deletes:
                    found.counters.append(f"{where}: more outcomes than events")


def _events_in_scope(
    values: list[bytes], side: Side, table: Table, mapping: Any
) -> tuple[int, int]:
    upserts = deletes = 0
    expr = mapping.filter(side)
    for value in values:
        try:
            event = _CODEC.decode(value)
        except DecodeError:
            continue
        if not isinstance(event, RecordChanged) or event.table != table.entity_set(side):
            continue
        try:
            UUID(event.record_id)
        except ValueError:
            continue
        if event.op == "delete":
            deletes += 1
        elif filters.evaluate(expr, event.fields, ignore_case=side == "dataverse"):
            upserts += 1
    return upserts, deletes


async def _check_dead_letters(p: Pipeline, poison: list[Poison], found: Findings) -> None:
    letters = await dead_letters(p.infra.bootstrap, p.topics.deadletter)
    by_value: dict[bytes, list[str]] = defaultdict(list)
    for letter in letters:
        by_value[letter.value].append(letter.headers.get("ts.reason", ""))
    expected = {m.value for m in poison}
    found.dead_lettered = len(expected & by_value.keys())
    for message in poison:
        reasons = by_value.get(message.value)
        if not reasons:
            found.dead_letters.append(f"{message.kind} on {message.topic} is not dead-lettered")
        elif not all(reasons):
            found.dead_letters.append(f"{message.kind} on {message.topic} has no reason")
        elif message.kind == "unknown table" and not any("widgets" in r for r in reasons):
            found.dead_letters.append(f"unknown table: the reason does not name it: {reasons}")
    unexpected = Counter(r for v, rs in by_value.items() if v not in expected for r in rs)
    for reason, n in unexpected.items():
        found.dead_letters.append(f"{n} events dead-lettered that were not poison: {reason}")


def rejected_ids(driver: Driver) -> set[str]:
    return {r.ids["bc"].lower() for r in driver.recs if r.poison and "bc" in r.ids}
