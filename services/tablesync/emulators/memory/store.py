"""One side's rows in plain dicts, as the emulator's PostgreSQL tables hold them.

A stored row keeps its values JSON-shaped, exactly as the API returns them (GUIDs as
lower-case text, decimals as floats, stamps as text at the side's precision), so reads
copy one dict and filters run on it with ``core.filters.evaluate``. Every write takes a
new value of one version counter per side, as every emulator write takes the next
value of the database's ``ts_version`` sequence; the ETag is made from it with the
emulators' ``etags`` functions.

Nothing here reads the wall clock or draws random numbers: stamps come from the
injected clock and new ids from an injected function (by default a deterministic
sequence of UUIDs).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from tablesync.core.catalog import FieldDef
from tablesync.core.events import FieldValue, Side
from tablesync.core.records import Row
from tablesync.emulators.bc.specs import BC_SPECS
from tablesync.emulators.common.etags import bc_etag, dataverse_etag
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import TableSpec
from tablesync.emulators.dataverse.specs import DATAVERSE_SPECS
from tablesync.ports.clock import Clock

__all__ = ["IdSource", "Store", "Stored", "counter_ids", "json_value"]

IdSource = Callable[[], str]
"""Gives the id of the next record the side creates (lower-case GUID text)."""

_ID_NAMESPACE = UUID("6b1d5b0e-3f9b-4c55-9a53-5d2f4e1a7c10")


def counter_ids(side: Side) -> IdSource:
    """Ids that look random (so id order is not creation order) but repeat run after run."""
    count = 0

    def next_id() -> str:
        nonlocal count
        count += 1
        return str(uuid.uuid5(_ID_NAMESPACE, f"{side}:{count}"))

    return next_id


def _stamp_text(moment: datetime, milliseconds: bool) -> str:
    # to_char(... 'YYYY-MM-DD"T"HH24:MI:SS[.MS]"Z"') of emulators/common/sql.py.
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if milliseconds:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def json_value(field: FieldDef, value: object, milliseconds: bool) -> FieldValue:
    """A converted (SQL-typed) value as the API reads it back (``output_expr``)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal | float):
        return float(value)
    if isinstance(value, datetime):
        return _stamp_text(value.astimezone(UTC), milliseconds)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{field.name}: no JSON form for {type(value).__name__}")


@dataclass(slots=True)
class Stored:
    """One row: its values as read back, its stamp, its version and ETag."""

    values: dict[str, FieldValue]
    stamp: datetime
    version: int
    etag: str
    targets: dict[str, str] = field(default_factory=dict)
    """Dataverse polymorphic lookups: attribute → the entity set the value points into
    (the emulator's hidden ``_x_value@<set>`` columns)."""


class Table:
    __slots__ = ("defaults", "rows", "spec")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows: dict[str, Stored] = {}
        self.defaults: dict[str, FieldValue] = {
            name: json_value(f, f.default, False) for name, f in spec.entity.fields.items()
        }
        """What a create that omits a field stores (the columns' SQL defaults)."""

    def where(self, name: str, value: object) -> Iterator[tuple[str, Stored]]:
        """The rows whose ``name`` equals ``value`` (case-insensitively where the side
        compares text so)."""
        if self.spec.case_insensitive and isinstance(value, str):
            folded = value.lower()
            for key, row in self.rows.items():
                held = row.values.get(name)
                if isinstance(held, str) and held.lower() == folded:
                    yield key, row
            return
        for key, row in self.rows.items():
            if row.values.get(name) == value:
                yield key, row


class Store:
    """The tables of one side, its version counter, its clock and its id source."""

    def __init__(self, side: Side, clock: Clock, ids: IdSource | None = None) -> None:
        self.side: Side = side
        self.clock = clock
        self.new_id = ids or counter_ids(side)
        specs = BC_SPECS if side == "bc" else DATAVERSE_SPECS
        self.tables = {s.entity.entity_set: Table(s) for s in specs}
        self.version = 0
        self._etag = bc_etag if side == "bc" else dataverse_etag
        self.milliseconds = side == "bc"
        self.change_seq = 0
        self.changes: dict[tuple[str, str], tuple[int, bool]] = {}
        """The change log (``schema.CHANGES_TABLE``): (entity set, id) → the number of the
        record's last change, in the order changes took effect, and whether it deleted it."""
        self.stamp_override: datetime | None = None
        """The stamp the next writes get instead of the clock's: a transaction that stamped
        its rows then and commits only now."""

    def table(self, entity_set: str) -> Table:
        found = self.tables.get(entity_set)
        if found is None:
            raise ApiProblem(
                Kind.NO_RESOURCE, f"Resource not found for the segment '{entity_set}'."
            )
        return found

    def now(self) -> datetime:
        """The clock at this side's precision: ``date_trunc`` of ``TableSpec.stamp_expr``."""
        moment = self.stamp_override or self.clock.now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        micro = moment.microsecond // 1000 * 1000 if self.milliseconds else 0
        return moment.replace(microsecond=micro)

    def note_change(self, entity_set: str, key: str, *, deleted: bool = False) -> None:
        """A row's change took effect (its transaction committed)."""
        self.change_seq += 1
        self.changes[(entity_set, key)] = (self.change_seq, deleted)

    def next_version(self) -> tuple[int, str]:
        self.version += 1
        return self.version, self._etag(self.version)

    def stamp_text(self, moment: datetime) -> str:
        return _stamp_text(moment, self.milliseconds)

    def json(self, field: FieldDef, value: object) -> FieldValue:
        return json_value(field, value, self.milliseconds)

    def row(self, table: Table, stored: Stored) -> Row:
        """What a read returns: a copy of the values, so callers cannot change the store."""
        entity = table.spec.entity
        key = stored.values[entity.key]
        by = stored.values.get(entity.modified_by_field) if entity.modified_by_field else None
        return Row(
            id=str(key),
            modified_at=stored.stamp,
            etag=stored.etag,
            fields=dict(stored.values),
            modified_by=by if isinstance(by, str) else None,
        )
