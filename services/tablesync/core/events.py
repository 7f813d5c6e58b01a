"""The events tablesync exchanges over Kafka, as plain frozen values.

Each class mirrors the Avro record of the same name in ``schemas/avro``; the
codec in ``tablesync.adapters.avro`` is the only place that turns them into
bytes. Field names match the Avro field names one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

__all__ = [
    "CdcEvent",
    "Command",
    "Direction",
    "Event",
    "FieldValue",
    "FullSyncRequested",
    "JobFinished",
    "JobKind",
    "JobStarted",
    "Outcome",
    "RecordChanged",
    "RecordFailed",
    "Side",
    "SnapshotEnd",
    "SnapshotKind",
    "SnapshotRequested",
    "SyncMappingRequested",
    "SyncModifiedRequested",
    "other_side",
]

Side: TypeAlias = Literal["bc", "dataverse"]
Direction: TypeAlias = Literal["to_integration", "from_integration"]
JobKind: TypeAlias = Literal["full", "modified"]
SnapshotKind: TypeAlias = Literal["full", "modified", "records"]
FieldValue: TypeAlias = bool | int | float | str | None


def other_side(side: Side) -> Side:
    return "dataverse" if side == "bc" else "bc"


@dataclass(frozen=True, slots=True)
class RecordChanged:
    side: Side
    table: str
    record_id: str
    op: Literal["upsert", "delete"]
    modified_at: datetime
    captured_at: datetime
    fields: dict[str, FieldValue] = field(default_factory=dict, hash=False)
    etag: str | None = None
    modified_by: str | None = None
    snapshot_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotEnd:
    side: Side
    table: str
    job_id: str
    partition: int
    records: int
    emitted_at: datetime


@dataclass(frozen=True, slots=True)
class FullSyncRequested:
    run_id: str
    requested_at: datetime
    requested_by: str = ""
    mappings: tuple[str, ...] = ()
    keep_only_coupled_cleared: bool = False
    unconditional: bool = False


@dataclass(frozen=True, slots=True)
class SyncModifiedRequested:
    run_id: str
    requested_at: datetime
    requested_by: str = ""
    mapping: str | None = None


@dataclass(frozen=True, slots=True)
class SyncMappingRequested:
    run_id: str
    step: int
    steps: int
    mapping: str
    kind: JobKind
    requested_at: datetime
    ignore_only_coupled: bool = False
    unconditional: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotRequested:
    job_id: str
    mapping: str
    side: Side
    table: str
    kind: SnapshotKind
    requested_at: datetime
    run_id: str | None = None
    since: datetime | None = None
    filter: str | None = None
    record_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobStarted:
    job_id: str
    mapping: str
    direction: Direction
    kind: str
    started_at: datetime
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobFinished:
    job_id: str
    mapping: str
    direction: Direction
    topic: str
    partition: int
    partitions: int
    finished_at: datetime
    inserted: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    coupled: int = 0
    uncoupled: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class RecordFailed:
    mapping: str
    direction: Direction
    source_id: str
    message: str
    failed_at: datetime
    job_id: str | None = None
    destination_id: str | None = None
    detail: str = ""
    attempts: int = 1
    skipped: bool = False


CdcEvent: TypeAlias = RecordChanged | SnapshotEnd
Command: TypeAlias = (
    FullSyncRequested | SyncModifiedRequested | SyncMappingRequested | SnapshotRequested
)
Outcome: TypeAlias = JobStarted | JobFinished | RecordFailed
Event: TypeAlias = CdcEvent | Command | Outcome
