"""One record's decision from everything known about it.

``triage`` (in ``plan``) says what must be fetched; the runtime gathers those
facts into one ``Facts`` value — the coupled counterpart as it is now, the
match candidates, the record an interrupted create made, the writes that
attempts which did not commit announced — and ``decide`` picks the rule of
``plan`` that applies. ``lookups_needed`` says which couplings of other
mappings the values need resolved first. After a create, ``write_back``
is what flows back to the source (a number the other side filled in)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tablesync.core.couplings import Coupling
from tablesync.core.effects import Intent, WriteTarget
from tablesync.core.events import Direction, FieldValue, RecordChanged, Side, other_side
from tablesync.core.fieldmap import (
    LookupKey,
    Mapped,
    changes,
    edited_since,
    lookup_keys,
    map_values,
    not_written_back,
)
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
from tablesync.core.plan import (
    Create,
    Decision,
    Fail,
    FetchCandidates,
    FetchDestination,
    Ignore,
    Pending,
    Remove,
    Triage,
    Unchanged,
    at_rest,
    decide_coupled,
    decide_deletion,
    decide_uncoupled,
    row_of,
    stamp_of,
)
from tablesync.core.records import Row, WriteValue
from tablesync.core.recovery import Announced

__all__ = [
    "Decided",
    "Facts",
    "decide",
    "event_of",
    "lookups_needed",
    "write_back",
    "write_back_lookups",
    "writes_back",
]


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known of one changed record when it is decided."""

    event: RecordChanged
    triage: Triage
    coupling: Coupling | None = None
    tombstoned: bool = False
    """The record's deletion was seen before this version of it."""
    source_gone: bool = False
    """The record of this version of an uncoupled record was not found just now:
    deleted since, never to be created on the other side."""
    paired: bool = False
    """The coupling is the one an interrupted create of this deleted record
    made: written with the decision on the pair."""
    destination: Row | None = None
    """The coupled counterpart as it is now (None: gone, or not read)."""
    destination_changed: bool = False
    """The counterpart's version is newer than the one last synced."""
    candidates: tuple[Row, ...] = ()
    """Uncoupled records of the other side with the record's match values."""
    created_before: Row | None = None
    """The record a create of this very record made before a crash."""
    intent: Intent | None = None
    """This record's own create, announced by an attempt that did not commit."""
    blocked: bool = False
    """The record may be one a create of the other side is making right now."""
    announced: Announced = field(default_factory=Announced)
    """The writes to the pair that were announced (by this attempt, or one that died)."""
    written_here: tuple[dict[str, FieldValue], ...] = ()
    """What updates of this very record, announced by attempts that did not
    commit, would have left on it: its values that match are tablesync's."""
    written_there: tuple[dict[str, FieldValue], ...] = ()
    """The same of the record this record's own create made (``created_before``
    or the match of an announced create): tablesync's updates of it since."""
    written_there_by: WriteTarget | None = None
    """The announced update of that record whose images ``written_there`` are:
    settled with the create it belongs to."""
    refused: str | None = None
    """A side refused a read this record's decision needs (a value it cannot
    read in a query, say): why. The record fails with that reason; the
    records read beside it go on."""

    @property
    def deleting(self) -> bool:
        """Whether the decision is on the deletion of the record itself: a
        delete event, or a version of a record whose deletion was seen before."""
        return self.event.op == "delete" or self.tombstoned


@dataclass(frozen=True, slots=True)
class Decided:
    decision: Decision
    mapped: Mapped | None = None
    """The values the decision was made on (None: none were mapped)."""


def event_of(row: Row, side: Side, table: str) -> RecordChanged:
    """A record as read now, as a change to decide on."""
    return RecordChanged(
        side=side,
        table=table,
        record_id=row.id,
        op="upsert",
        modified_at=row.modified_at,
        captured_at=row.modified_at,
        fields=row.fields,
        etag=row.etag,
        modified_by=row.modified_by,
    )


def _values_source(mapping: TableMapping, f: Facts) -> tuple[RecordChanged, Direction] | None:
    """The record whose values the decision maps, and which way."""
    t, event = f.triage, f.event
    if isinstance(t, FetchCandidates):
        return event, direction_of(event.side)
    if isinstance(t, FetchDestination):
        if f.deleting:
            if f.destination is None:
                return None
            return event_of(f.destination, t.side, mapping.table(t.side)), direction_of(t.side)
        return event, direction_of(event.side)
    return None


def lookups_needed(mapping: TableMapping, f: Facts) -> set[LookupKey]:
    """The lookups to resolve before ``f`` is decided."""
    keys: set[LookupKey] = set()
    source = _values_source(mapping, f)
    if source is not None:
        event, direction = source
        keys |= lookup_keys(mapping, direction, event.fields)
    t = f.triage
    if (
        isinstance(t, FetchDestination)
        and f.destination is not None
        and f.event.op == "upsert"
        and f.destination_changed
        and mapping.allows(direction_of(t.side))
    ):
        # The way back, for telling whether both records are at rest.
        keys |= lookup_keys(mapping, direction_of(t.side), f.destination.fields)
    return keys


def decide(
    mapping: TableMapping,
    mappings: MappingSet,
    f: Facts,
    resolved: Mapping[LookupKey, str],
) -> Decided:
    """The decision on ``f``, lookups resolved as ``resolved``."""

    def mapped_from(event: RecordChanged, *, creating: bool) -> Mapped:
        return map_values(
            mapping, direction_of(event.side), event.fields, resolved, mappings, creating=creating
        )

    event, t = f.event, f.triage
    if f.refused is not None:
        # Not decided on facts partly read: listed, and tried again later.
        return Decided(Fail(f.refused))
    if isinstance(t, Ignore) and f.created_before is not None:
        # An interrupted create made the record before this version fell out
        # of scope: coupled as made, this version not synced.
        row = f.created_before
        return Decided(
            Create(
                other_side(event.side),
                {},
                row.id,
                event.record_id,
                stamp_of(event),
                matched=row,
                recovered=True,
                edited=(
                    edited_since(f.intent.sent, row.fields, f.written_there)
                    if f.intent
                    else frozenset()
                ),
            )
        )
    if isinstance(t, Ignore | Unchanged | Pending):
        return Decided(t)
    if isinstance(t, FetchCandidates):
        mapped = mapped_from(event, creating=True)
        decision = decide_uncoupled(
            event,
            mapping,
            mapped,
            list(f.candidates),
            created_before=f.created_before,
            sent=f.intent.sent if f.intent else None,
            written=f.written_there,
            blocked_by_intent=f.blocked,
            announced=f.intent is not None,
            job=t.coupling_run,
        )
        return Decided(decision, mapped)
    if f.deleting:
        survivor = f.destination
        mapped_survivor = None
        if survivor is not None:
            as_event = event_of(survivor, t.side, mapping.table(t.side))
            mapped_survivor = mapped_from(as_event, creating=True)
        target = f.announced.target
        decision = decide_deletion(
            mapping,
            t.coupling,
            event.side,
            survivor,
            mapped_survivor,
            deleted_here=target[0] if target else None,
        )
        return Decided(decision, mapped_survivor)
    if f.destination is None and f.announced.deleted_by_us:
        # An attempt that did not commit deleted the counterpart: it was
        # removing the pair (this record's own deletion comes later on its
        # partition). Completed, and its deletion counted, here.
        return Decided(Remove(t.side, t.record_id, t.coupling))
    if f.destination is None:
        mapped = mapped_from(event, creating=True)
        return Decided(decide_deletion(mapping, t.coupling, t.side, row_of(event), mapped), mapped)
    mapped = mapped_from(event, creating=False)
    # What tablesync itself wrote to this record is no change of the user's.
    mapped = not_written_back(mapped, event.side, event.fields, f.written_here)
    decision = decide_coupled(
        event, mapping, t.coupling, f.destination, mapped, unconditional=t.unconditional
    )
    if isinstance(decision, Unchanged) and f.destination_changed:
        back = None
        if mapping.allows(direction_of(t.side)):
            as_event = event_of(f.destination, t.side, mapping.table(t.side))
            back = mapped_from(as_event, creating=False)
        decision = at_rest(decision, event, mapping, f.destination, back, ours=f.announced.before)
    return Decided(decision, mapped)


def writes_back(mapping: TableMapping, d: Decision, written: Row | None) -> bool:
    """Whether a performed decision may send values back to its source: a new
    record made, in a mapping that carries values the other way too."""
    return (
        isinstance(d, Create)
        and d.matched is None
        and written is not None
        and mapping.allows(direction_of(d.side))
    )


def write_back_lookups(mapping: TableMapping, d: Create, written: Row) -> set[LookupKey]:
    return lookup_keys(mapping, direction_of(d.side), written.fields)


def write_back(
    mapping: TableMapping,
    mappings: MappingSet,
    event: RecordChanged,
    d: Create,
    written: Row,
    resolved: Mapping[LookupKey, str],
) -> dict[str, WriteValue]:
    """What to send back to the source of a create, from the record it made:
    only what the source left blank and the create filled in (a BC number
    from its number series, say). A value the source has is the user's, even
    if the other side shortened it. Empty: nothing, or a lookup unresolved."""
    back = map_values(
        mapping, direction_of(d.side), written.fields, resolved, mappings, creating=False
    )
    if back.unresolved:
        return {}
    return {
        name: value
        for name, value in changes(back, event.side, event.fields).items()
        if _blank(event.fields.get(name.removesuffix("@odata.bind")))
    }


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
