"""Rows as the sync engine sees them, on either side, and writes to a side."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from tablesync.core.events import FieldValue

__all__ = [
    "Changes",
    "Create",
    "Delete",
    "Missing",
    "Ref",
    "Rejected",
    "Row",
    "Stale",
    "Update",
    "WriteOp",
    "WriteResult",
    "Written",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One record as an API returned it."""

    id: str
    modified_at: datetime
    etag: str | None
    fields: dict[str, FieldValue] = field(default_factory=dict, hash=False)
    modified_by: str | None = None


@dataclass(frozen=True, slots=True)
class Ref:
    """A Dataverse lookup value to write: ``<navigation>@odata.bind: /<entity_set>(<id>)``."""

    entity_set: str
    id: str


WriteValue: TypeAlias = FieldValue | Ref


@dataclass(frozen=True, slots=True)
class Create:
    values: dict[str, WriteValue]
    # Dataverse accepts a caller-chosen primary key; BC's id is read-only.
    record_id: str | None = None
    tag: str = ""
    # Refused (``Stale``) where a record with ``record_id`` exists, never
    # written over: a create that reaches the side late (sent by an instance
    # frozen meanwhile) cannot undo what was written to its record since.
    # Without it, a create with an id is Dataverse's upsert.
    only_new: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    record_id: str
    values: dict[str, WriteValue]
    etag: str | None = None
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Delete:
    record_id: str
    etag: str | None = None
    tag: str = ""


WriteOp: TypeAlias = Create | Update | Delete


@dataclass(frozen=True, slots=True)
class Written:
    """The write happened; ``row`` is the record as stored after it (None after a delete)."""

    row: Row | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The API refused this record (4xx); ``message`` is the API's own."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Missing:
    """The record to update or delete does not exist (404)."""

    message: str = ""


@dataclass(frozen=True, slots=True)
class Stale:
    """The ETag given no longer matches (412): someone wrote in between."""

    message: str = ""


WriteResult: TypeAlias = Written | Rejected | Missing | Stale


@dataclass(frozen=True, slots=True)
class Changes:
    """One page of a change-tracking read: rows created or changed (as they are now) and
    the ids of rows deleted; the last page of a read carries the delta link the next
    read of the table's changes starts from."""

    rows: list[Row]
    deleted: list[str] = field(default_factory=list)
    delta_link: str | None = None
