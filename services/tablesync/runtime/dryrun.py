"""A full synchronization that writes nothing: what it would create, couple,
update, leave unchanged, skip by filter, keep pending on lookups, and where
both sides changed.

It reads both sides and the couplings once, then runs the very rules a full
synchronization runs — mapping by mapping in dependency order, BC → Dataverse
before Dataverse → BC — against an in-memory copy: every write the real run
would make is made to the copy, every coupling it would record is recorded
there, so later mappings resolve their lookups through the couplings earlier
ones would have made, and the reverse direction sees the records the first
one would have created. Neither side nor the state database is written."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from tablesync.core import catalog, filters
from tablesync.core.coupling_rules import coupled_to
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Direction, FieldValue, RecordChanged, Side, other_side
from tablesync.core.fieldmap import LookupKey, lookup_keys, map_values, normalise_key, same_value
from tablesync.core.mappings import MappingSet, TableMapping, source_side
from tablesync.core.matching import match_values, matches
from tablesync.core.plan import (
    Create,
    Decision,
    Fail,
    FetchCandidates,
    FetchDestination,
    Ignore,
    JobContext,
    MarkDeleted,
    Pending,
    Remove,
    Restore,
    Skip,
    Unchanged,
    Uncouple,
    Update,
    counters_of,
    decide_coupled,
    decide_deletion,
    decide_uncoupled,
    triage,
)
from tablesync.core.records import Ref, Row, WriteValue
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock

__all__ = ["DirectionPreview", "dry_run"]

_CONTEXT = JobContext(job_id="dry-run", kind="full", ignore_only_coupled=True)


@dataclass
class DirectionPreview:
    """What a full synchronization would do for one mapping and direction.

    ``counts`` uses the job log's counters (inserted, coupled, modified,
    unchanged, skipped, failed, pending …) so it compares one to one with the
    run that follows; ``filtered`` and ``conflicts`` say why records are left out."""

    mapping: str
    direction: Direction
    counts: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    conflicts: int = 0
    examples: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "mapping": self.mapping,
            "direction": self.direction,
            "would_create": self.counts["inserted"],
            "would_couple_by_match": self.counts["coupled"],
            "would_update": self.counts["modified"],
            "unchanged": self.counts["unchanged"],
            "skipped_by_filter": self.filtered,
            "pending_on_lookups": self.counts["pending"],
            "in_conflict": self.conflicts,
            "would_fail": self.counts["failed"],
            "skipped": self.counts["skipped"],
            "counts": dict(self.counts),
            "examples": self.examples,
        }


class _World:
    """Both sides and the couplings as the run would leave them."""

    def __init__(self, apis: dict[Side, SideApi], clock: Clock) -> None:
        self.apis = apis
        self.clock = clock
        self.tables: dict[tuple[Side, str], dict[str, Row]] = {}
        self.couplings: dict[str, dict[str, Coupling]] = {}
        self._version = 0
        self.integration_user: str | None = None

    async def table(self, side: Side, name: str) -> dict[str, Row]:
        key = (side, name)
        if key not in self.tables:
            rows: dict[str, Row] = {}
            async for page in self.apis[side].read_all(name):
                for row in page:
                    rows[row.id] = row
            self.tables[key] = rows
            for row in rows.values():
                if side == "dataverse" and row.etag:
                    self._version = max(self._version, _dv_version(row.etag))
        return self.tables[key]

    def coupling(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        pairs = self.couplings.get(mapping, {})
        if side == "bc":
            return pairs.get(record_id)
        return next((c for c in pairs.values() if c.dv_id == record_id), None)

    def couple(self, c: Coupling) -> None:
        pairs = self.couplings.setdefault(c.mapping, {})
        for bc_id, old in list(pairs.items()):
            if old.dv_id == c.dv_id and bc_id != c.bc_id:
                del pairs[bc_id]
        pairs[c.bc_id] = c

    def uncouple(self, c: Coupling) -> None:
        self.couplings.get(c.mapping, {}).pop(c.bc_id, None)

    def resolve(self, keys: set[LookupKey]) -> dict[LookupKey, str]:
        found: dict[LookupKey, str] = {}
        for k in keys:
            for c in self.couplings.get(k.target, {}).values():
                if k.side == "bc" and c.bc_key and normalise_key("bc", c.bc_key) == k.value:
                    found[k] = c.dv_id
                elif k.side == "dataverse" and c.dv_id == k.value and c.bc_key:
                    found[k] = normalise_key("bc", c.bc_key)
        return found

    def write(
        self,
        side: Side,
        table: str,
        record_id: str,
        payload: dict[str, WriteValue],
        *,
        create: bool,
    ) -> Row:
        rows = self.tables[(side, table)]
        entity = catalog.entity(side, table)
        fields: dict[str, FieldValue] = {}
        if create:
            fields = {name: _plain(f.default) for name, f in entity.fields.items()}
            fields[entity.key] = record_id
        else:
            fields = dict(rows[record_id].fields)
        for name, value in payload.items():
            if isinstance(value, Ref) or name.endswith("@odata.bind"):
                attribute = _attribute(entity, name)
                fields[f"_{attribute}_value"] = value.id if isinstance(value, Ref) else None
            else:
                fields[name] = value
        number = entity.number_field
        if create and number is not None and not fields.get(number):
            # BC numbers the record from a number series; a stand-in number
            # lets lookups through the new coupling resolve as they will.
            fields[number] = f"(new {self._version + 1})"
        for name, f in entity.fields.items():
            if f.computed_from:
                fields[name] = (
                    " ".join(str(fields[p]) for p in f.computed_from if fields.get(p)) or None
                )
        self._version += 1
        now = self.clock.now()
        etag = f'W/"{self._version}"' if side == "dataverse" else f'W/"dry{self._version}"'
        row = Row(record_id, now, etag, fields)
        rows[record_id] = row
        return row


async def dry_run(
    mappings: MappingSet,
    apis: dict[Side, SideApi],
    couplings: dict[str, list[Coupling]],
    clock: Clock,
    *,
    only: Sequence[str] = (),
    examples: int = 5,
) -> list[DirectionPreview]:
    """Previews a full synchronization of ``only`` (or every mapping)."""
    world = _World(apis, clock)
    for pairs in couplings.values():
        for c in pairs:
            world.couple(c)
    previews: list[DirectionPreview] = []
    for mapping in mappings.mappings:
        if only and mapping.name not in only:
            continue
        for direction in mapping.directions():
            previews.append(await _preview(world, mappings, mapping, direction, examples))
    return previews


async def _preview(
    world: _World,
    mappings: MappingSet,
    mapping: TableMapping,
    direction: Direction,
    examples: int,
) -> DirectionPreview:
    preview = DirectionPreview(mapping.name, direction)
    side = source_side(direction)
    dest = other_side(side)
    source_table, dest_table = mapping.table(side), mapping.table(dest)
    rows = await world.table(side, source_table)
    await world.table(dest, dest_table)
    for row in sorted(rows.values(), key=lambda r: r.id):
        event = RecordChanged(
            side,
            source_table,
            row.id,
            "upsert",
            row.modified_at,
            row.modified_at,
            row.fields,
            row.etag,
            row.modified_by,
            "dry-run",
        )
        if not filters.evaluate(mapping.filter(side), row.fields, ignore_case=side == "dataverse"):
            preview.filtered += 1
            continue
        decision, destination_id = _decide(world, mappings, mapping, event)
        decision = _refusal(world, mapping, decision) or decision
        _perform(world, mapping, event, decision)
        _note(preview, decision, event, destination_id, examples)
    return preview


def _decide(
    world: _World, mappings: MappingSet, mapping: TableMapping, event: RecordChanged
) -> tuple[Decision, str | None]:
    side = event.side
    dest = other_side(side)
    dest_rows = world.tables[(dest, mapping.table(dest))]
    coupling = world.coupling(mapping.name, side, event.record_id)
    t = triage(event, mapping, _CONTEXT, coupling)
    direction: Direction = "to_integration" if side == "bc" else "from_integration"
    resolved = world.resolve(lookup_keys(mapping, direction, event.fields))
    if isinstance(t, Ignore | Unchanged | Pending):
        return t, coupling.id_on(dest) if coupling else None
    if isinstance(t, FetchDestination):
        destination = dest_rows.get(t.record_id)
        if destination is None:
            mapped = map_values(mapping, direction, event.fields, resolved, mappings, creating=True)
            row = Row(event.record_id, event.modified_at, event.etag, event.fields)
            return decide_deletion(mapping, t.coupling, dest, row, mapped), t.record_id
        mapped = map_values(mapping, direction, event.fields, resolved, mappings, creating=False)
        return decide_coupled(event, mapping, t.coupling, destination, mapped), t.record_id
    assert isinstance(t, FetchCandidates)
    mapped = map_values(mapping, direction, event.fields, resolved, mappings, creating=True)
    candidates = _candidates(world, mapping, event, dest_rows)
    return decide_uncoupled(event, mapping, mapped, candidates), None


def _refusal(world: _World, mapping: TableMapping, decision: Decision) -> Fail | None:
    """The refusal the side would answer a create with: an alternate key taken."""
    if not isinstance(decision, Create) or decision.matched is not None:
        return None
    table = mapping.table(decision.side)
    entity = catalog.entity(decision.side, table)
    rows = world.tables[(decision.side, table)].values()
    for key in entity.alternate_keys:
        wanted = [decision.payload.get(f) for f in key.fields]
        if any(v is None or v == "" for v in wanted):
            continue
        for row in rows:
            if all(
                same_value(row.fields.get(f), v) for f, v in zip(key.fields, wanted, strict=True)
            ):
                return Fail(f"a record with the same {', '.join(key.fields)} already exists")
    return None


def _candidates(
    world: _World, mapping: TableMapping, event: RecordChanged, dest_rows: dict[str, Row]
) -> list[Row]:
    if not mapping.match:
        return []
    side = event.side
    dest = other_side(side)
    wanted = match_values(mapping, side, event.fields)
    if wanted is None:
        return []
    dest_filter = mapping.filter(dest)
    return [
        row
        for row in dest_rows.values()
        if matches(mapping, dest, row.fields, wanted)
        and filters.evaluate(dest_filter, row.fields, ignore_case=dest == "dataverse")
        and world.coupling(mapping.name, dest, row.id) is None
    ]


def _perform(world: _World, mapping: TableMapping, event: RecordChanged, d: Decision) -> None:
    source_stamp = Stamp(event.modified_at, event.etag)
    match d:
        case Create(side=dest, payload=payload, record_id=rid, matched=matched):
            table = mapping.table(dest)
            if matched is not None:
                row = (
                    world.write(dest, table, matched.id, payload, create=False)
                    if payload
                    else matched
                )
            else:
                # BC picks the id of a record it creates; any fresh id stands for it.
                row = world.write(dest, table, rid or str(uuid.uuid4()), payload, create=True)
            world.couple(coupled_to(mapping, event, row, source_stamp))
        case Update(side=dest, record_id=rid, payload=payload, coupling=c):
            row = world.write(dest, mapping.table(dest), rid, payload, create=False)
            world.couple(c.with_stamp(dest, Stamp(row.modified_at, row.etag)))
        case Unchanged(coupling=c) if c is not None:
            world.couple(c)
        case Remove(coupling=c) | Uncouple(coupling=c):
            world.uncouple(c)
        case MarkDeleted(coupling=c):
            world.couple(c)
        case Restore() | Unchanged() | Pending() | Fail() | Skip() | Ignore():
            pass


def _note(
    preview: DirectionPreview,
    decision: Decision,
    event: RecordChanged,
    destination_id: str | None,
    limit: int,
) -> None:
    counters = counters_of(decision)
    preview.counts.update(counters)
    if isinstance(decision, Skip):
        preview.conflicts += 1
    if not counters:
        return
    example: dict[str, object] = {"source_id": event.record_id}
    match decision:
        case Create(matched=matched, payload=payload):
            example["destination_id"] = matched.id if matched is not None else decision.record_id
            example["fields"] = sorted(payload)
        case Update(record_id=rid, payload=payload):
            example["destination_id"] = rid
            example["fields"] = sorted(payload)
        case Pending(message=message) | Fail(message=message) | Skip(message=message):
            example["destination_id"] = destination_id
            example["message"] = message
        case _:
            example["destination_id"] = destination_id
    bucket = preview.examples.setdefault(counters[-1] if len(counters) > 1 else counters[0], [])
    if len(bucket) < limit:
        bucket.append(example)


def _attribute(entity: catalog.Entity, written: str) -> str:
    nav = written.removesuffix("@odata.bind")
    for attribute, lookup in entity.lookups.items():
        if attribute == nav or any(t.navigation == nav for t in lookup.targets):
            return attribute
    return nav


def _plain(value: object) -> FieldValue:
    """A catalog default as the API would return it in JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _dv_version(etag: str) -> int:
    digits = "".join(ch for ch in etag if ch.isdigit())
    return int(digits) if digits else 0
