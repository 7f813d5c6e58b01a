"""The coupling a performed decision leaves between two records.

A coupling names both records and the version of each that the sync last
saw (its stamp: modified-on and ETag), and the BC record's natural key
(``TableMapping.bc_key``, e.g. a customer number) through which other
mappings' lookups resolve to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import FieldValue, RecordChanged, Side, other_side
from tablesync.core.mappings import TableMapping
from tablesync.core.plan import Create, Restore, stamp_of
from tablesync.core.records import Row

__all__ = ["couple_created", "couple_matched", "coupled_to", "key_of", "restored", "row_stamp"]


def row_stamp(row: Row) -> Stamp:
    """The version of a record as a side returned it."""
    return Stamp(row.modified_at, row.etag)


def key_of(mapping: TableMapping, bc_fields: Mapping[str, FieldValue]) -> str | None:
    """The natural key of a BC record, as a coupling keeps it; None when the
    mapping has none or the record leaves it blank."""
    if mapping.bc_key is None:
        return None
    value = bc_fields.get(mapping.bc_key)
    return value if isinstance(value, str) and value.strip() else None


def coupled_to(mapping: TableMapping, event: RecordChanged, row: Row, source: Stamp) -> Coupling:
    """The coupling of the changed record (at version ``source``) with ``row``
    on the other side, as the side returned it."""
    dest = other_side(event.side)
    ids = {event.side: event.record_id, dest: row.id}
    stamps = {event.side: source, dest: row_stamp(row)}
    bc_fields = event.fields if event.side == "bc" else row.fields
    return Coupling.between(mapping.name, ids, stamps, key_of(mapping, bc_fields))


def couple_created(
    mapping: TableMapping,
    event: RecordChanged,
    d: Create,
    written: Row | None,
    source_after: Row | None,
) -> Coupling | None:
    """The coupling a create makes, with the record it made (``written``, or the
    one a create interrupted by a crash made: ``d.matched``). ``source_after``
    is the source as a write-back left it: that version is the synced one."""
    row = written or d.matched
    if row is None:
        return None
    source = row_stamp(source_after) if source_after else stamp_of(event)
    coupling = coupled_to(mapping, event, row, source)
    if d.edited:
        # A user changed the record since tablesync made it: that version is
        # not the synced one, so its next event (or the replay of the user's
        # own) syncs back as a change.
        coupling = coupling.with_stamp(other_side(event.side), Stamp(None, None))
    return coupling


def couple_matched(
    mapping: TableMapping, event: RecordChanged, d: Create, written: Row | None
) -> Coupling:
    """The coupling of a record with the uncoupled one it matched (as the
    payload written to it left it)."""
    assert d.matched is not None
    return coupled_to(mapping, event, written or d.matched, stamp_of(event))


def restored(mapping: TableMapping, d: Restore, row: Row | None) -> Coupling | None:
    """The coupling a restore makes with the record it re-created (``row``):
    it replaces the old one, the surviving side's id and stamp kept."""
    if row is None:
        return None
    old = d.coupling
    ids: dict[Side, str] = {"bc": old.bc_id, "dataverse": old.dv_id}
    ids[d.side] = row.id
    stamps: dict[Side, Stamp] = {"bc": old.bc_stamp, "dataverse": old.dv_stamp}
    stamps[d.side] = row_stamp(row)
    key = key_of(mapping, row.fields) if d.side == "bc" else old.bc_key
    new = Coupling.between(mapping.name, ids, stamps, key)
    return replace(new, bc_deleted=False, dv_deleted=False)
