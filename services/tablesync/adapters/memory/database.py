"""The in-memory state database every memory store of one bundle shares.

Its tables are plain dicts of immutable rows, laid out as the SQL schema of
``adapters/postgres/migrations`` is (one dict per table, keyed by its primary key, nested
under the mapping or job most reads select by), with the constraints the
stores rely on enforced here as PostgreSQL enforces them there: foreign keys
to ``jobs`` and ``runs``, the CHECKs, the one-Dataverse-row-per-mapping rule.
A broken constraint raises ``ConstraintViolation`` and changes nothing.

Time is the database's: every ``now()`` of the SQL is ``MemoryDatabase.now()``,
read once per call (PostgreSQL's ``now()`` is one instant per transaction), from
an injected ``Clock``.

A transaction is staged: its writes go to ``Staged`` overlays that its own
reads see, and only once every row is built and every constraint checked are
they applied to the tables — plain dict assignments that cannot fail — so an
exception before that leaves the tables as they were.

``copy()`` (and ``snapshot()``/``restore()``) copy the dicts, not the rows:
rows are never changed in place, so a copy costs one dict copy per table and
mapping, and the copy and the original never see each other's writes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar
from uuid import UUID

import orjson

from tablesync.core.couplings import Coupling
from tablesync.core.effects import LogEntry, WriteTarget
from tablesync.core.events import FieldValue, Side
from tablesync.core.stored import JobError
from tablesync.ports.clock import Clock, SystemClock

__all__ = [
    "ConstraintViolation",
    "MemoryDatabase",
    "MemoryStore",
    "Pause",
]

Pause = Callable[[str], Awaitable[None]]
"""A scheduler's hook, awaited with the store call's name before it acts."""

O = TypeVar("O")  # noqa: E741
I = TypeVar("I")  # noqa: E741
V = TypeVar("V")

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class ConstraintViolation(Exception):
    """A write broke a constraint of the schema (a foreign key, a CHECK, a
    unique index): what PostgreSQL refuses with an integrity error. The call
    that raised it changed nothing."""


# Values as the database keeps them


@functools.lru_cache(maxsize=1 << 16)
def uuid_text(value: str) -> str:
    """A uuid column's value as PostgreSQL reads it back: lower case, hyphened.
    Raises ``ValueError`` for what is not a GUID, as ``uuid.UUID`` does for the
    Postgres adapter before it sends the query."""
    return str(UUID(value))


def is_uuid(value: str) -> bool:
    try:
        uuid_text(value)
    except ValueError:
        return False
    return True


def utc(moment: datetime) -> datetime:
    """A timestamptz as asyncpg returns it: the same instant, in UTC (a naive
    value is taken as local time, as asyncpg takes it)."""
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)


def jsonb(value: Any) -> Any:
    """A value through a jsonb column (the pool's orjson codec): a fresh copy,
    with whatever JSON cannot hold turned the way it turns there."""
    return orjson.loads(orjson.dumps(value))


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConstraintViolation(message)


# Rows


@dataclass(frozen=True, slots=True)
class Pair:
    """A row of ``couplings``: the coupling (ids canonical, key normalised,
    stamps in UTC) and its bookkeeping."""

    coupling: Coupling
    coupled_at: datetime
    last_synced_at: datetime


@dataclass(frozen=True, slots=True)
class IntentRow:
    dest_id: str | None
    created_at: datetime
    payload: dict[str, FieldValue]
    touched_at: datetime
    made: bool = False


@dataclass(frozen=True, slots=True)
class WriteRow:
    created_at: datetime
    images: tuple[dict[str, FieldValue], ...]


@dataclass(frozen=True, slots=True)
class StatusRow:
    mapping: str
    source_side: Side
    source_id: str
    status: str
    reason: str
    message: str
    destination_id: str | None
    attempts: int
    same_failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime | None
    last_job_id: str | None
    waiting_for: tuple[str, ...]
    event: bytes


@dataclass(frozen=True, slots=True)
class PartitionRow:
    counts: tuple[int, ...]
    """In the order of ``core.plan.COUNTED``."""
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class PositionRow:
    next_offset: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    kind: str
    status: str
    mappings: tuple[str, ...]
    options: dict[str, Any]
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str
    company: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    run_id: str | None
    mapping: str
    direction: str
    kind: str
    type: str
    status: str
    ignore_only_coupled: bool
    source_topic: str | None
    partitions: int | None
    interval_start: datetime | None
    snapshot_requested: bool
    started_at: datetime
    finished_at: datetime | None
    message: str
    unconditional: bool = False
    create_unmatched: bool = False
    sync_after: bool = False
    company: str = ""


@dataclass(frozen=True, slots=True)
class MappingRow:
    position: int
    definition: dict[str, Any]
    direction: str
    sync_only_coupled: bool
    table_filter: str | None
    integration_table_filter: str | None
    loaded_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    watermark: datetime | None
    updated_at: datetime
    delta_link: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    side: str
    table_name: str
    records: int
    started_at: datetime
    finished_at: datetime | None


# Tables


class Nested(Generic[O, I, V]):
    """A table keyed by (outer, inner), kept as one dict per outer key (the
    mapping or job its reads select by), so those reads touch only their part."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[O, dict[I, V]] | None = None) -> None:
        self.rows: dict[O, dict[I, V]] = {} if rows is None else rows

    def get(self, outer: O, inner: I) -> V | None:
        part = self.rows.get(outer)
        return None if part is None else part.get(inner)

    def of(self, outer: O) -> Mapping[I, V]:
        return self.rows.get(outer, _EMPTY)

    def set(self, outer: O, inner: I, value: V) -> None:
        part = self.rows.get(outer)
        if part is None:
            part = self.rows[outer] = {}
        part[inner] = value

    def pop(self, outer: O, inner: I) -> None:
        part = self.rows.get(outer)
        if part is not None:
            part.pop(inner, None)

    def items(self) -> Iterator[tuple[O, I, V]]:
        for outer, part in self.rows.items():
            for inner, value in part.items():
                yield outer, inner, value

    def copy(self) -> Nested[O, I, V]:
        return Nested({outer: part.copy() for outer, part in self.rows.items()})


class Staged(Generic[O, I, V]):
    """One transaction's writes to a ``Nested`` table: seen by its own reads,
    applied to the table by ``apply`` only."""

    __slots__ = ("changes", "table")

    def __init__(self, table: Nested[O, I, V]) -> None:
        self.table = table
        self.changes: dict[tuple[O, I], V | None] = {}

    def get(self, outer: O, inner: I) -> V | None:
        key = (outer, inner)
        if key in self.changes:
            return self.changes[key]
        return self.table.get(outer, inner)

    def put(self, outer: O, inner: I, value: V) -> None:
        self.changes[(outer, inner)] = value

    def drop(self, outer: O, inner: I) -> None:
        self.changes[(outer, inner)] = None

    def apply(self) -> None:
        for (outer, inner), value in self.changes.items():
            if value is None:
                self.table.pop(outer, inner)
            else:
                self.table.set(outer, inner, value)


class Pairs:
    """The couplings of one mapping, by BC id, with the indexes PostgreSQL
    keeps: Dataverse id (unique) and BC key; and the latest ``last_synced_at``,
    which is what "got a coupling since" asks."""

    __slots__ = ("_latest", "_latest_known", "by_bc", "by_dv", "by_key")

    def __init__(self) -> None:
        self.by_bc: dict[str, Pair] = {}
        self.by_dv: dict[str, str] = {}
        self.by_key: dict[str, tuple[str, ...]] = {}
        self._latest: datetime | None = None
        self._latest_known = True

    def set(self, pair: Pair) -> None:
        c = pair.coupling
        old = self.by_bc.get(c.bc_id)
        if old is not None:
            self._unindex(old)
        self.by_bc[c.bc_id] = pair
        self.by_dv[c.dv_id] = c.bc_id
        if c.bc_key is not None:
            self.by_key[c.bc_key] = (*self.by_key.get(c.bc_key, ()), c.bc_id)
        if self._latest_known and (self._latest is None or pair.last_synced_at > self._latest):
            self._latest = pair.last_synced_at

    def remove(self, bc_id: str) -> None:
        old = self.by_bc.pop(bc_id, None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, old: Pair) -> None:
        c = old.coupling
        # Another row may hold the Dataverse id already (a transaction applies
        # its rows in no particular order): only this row's entry goes.
        if self.by_dv.get(c.dv_id) == c.bc_id:
            del self.by_dv[c.dv_id]
        if c.bc_key is not None:
            rest = tuple(b for b in self.by_key.get(c.bc_key, ()) if b != c.bc_id)
            if rest:
                self.by_key[c.bc_key] = rest
            else:
                self.by_key.pop(c.bc_key, None)
        if old.last_synced_at == self._latest:
            self._latest_known = False

    def synced_after(self, moment: datetime) -> bool:
        if not self._latest_known:
            self._latest = max((p.last_synced_at for p in self.by_bc.values()), default=None)
            self._latest_known = True
        return self._latest is not None and self._latest > moment

    def copy(self) -> Pairs:
        other = Pairs()
        other.by_bc = self.by_bc.copy()
        other.by_dv = self.by_dv.copy()
        other.by_key = self.by_key.copy()
        other._latest = self._latest
        other._latest_known = self._latest_known
        return other


class StagedPairs:
    """One transaction's writes to the couplings, keeping its own view of the
    Dataverse index so a re-coupling within it finds the rows it moved."""

    __slots__ = ("dv", "rows", "table")

    def __init__(self, table: dict[str, Pairs]) -> None:
        self.table = table
        self.rows: dict[tuple[str, str], Pair | None] = {}
        self.dv: dict[tuple[str, str], str | None] = {}

    def get(self, mapping: str, bc_id: str) -> Pair | None:
        key = (mapping, bc_id)
        if key in self.rows:
            return self.rows[key]
        pairs = self.table.get(mapping)
        return None if pairs is None else pairs.by_bc.get(bc_id)

    def bc_of(self, mapping: str, dv_id: str) -> str | None:
        key = (mapping, dv_id)
        if key in self.dv:
            return self.dv[key]
        pairs = self.table.get(mapping)
        return None if pairs is None else pairs.by_dv.get(dv_id)

    def put(self, pair: Pair) -> None:
        c = pair.coupling
        old = self.get(c.mapping, c.bc_id)
        if (
            old is not None
            and old.coupling.dv_id != c.dv_id
            and self.bc_of(c.mapping, old.coupling.dv_id) == c.bc_id
        ):
            self.dv[(c.mapping, old.coupling.dv_id)] = None
        self.rows[(c.mapping, c.bc_id)] = pair
        self.dv[(c.mapping, c.dv_id)] = c.bc_id

    def drop(self, mapping: str, bc_id: str) -> Pair | None:
        old = self.get(mapping, bc_id)
        if old is None:
            return None
        self.rows[(mapping, bc_id)] = None
        if self.bc_of(mapping, old.coupling.dv_id) == bc_id:
            self.dv[(mapping, old.coupling.dv_id)] = None
        return old

    def apply(self) -> None:
        for (mapping, bc_id), pair in self.rows.items():
            pairs = self.table.get(mapping)
            if pair is None:
                if pairs is not None:
                    pairs.remove(bc_id)
                continue
            if pairs is None:
                pairs = self.table[mapping] = Pairs()
            pairs.set(pair)


class Tables:
    """Every table of the schema. Rows are immutable; writes replace them."""

    def __init__(self) -> None:
        self.couplings: dict[str, Pairs] = {}
        # mapping -> (source side, source id)
        self.intents: Nested[str, tuple[Side, str], IntentRow] = Nested()
        self.statuses: Nested[str, tuple[Side, str], StatusRow] = Nested()
        # mapping -> (side, record id) -> deleted_at
        self.deleted: Nested[str, tuple[Side, str], datetime] = Nested()
        # mapping -> (side, record id, kind)
        self.writes: Nested[str, WriteTarget, WriteRow] = Nested()
        # mapping -> (topic, partition)
        self.positions: Nested[str, tuple[str, int], PositionRow] = Nested()
        self.epochs: Nested[str, tuple[str, int], int] = Nested()
        self.runs: dict[str, RunRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        # (mapping, direction, interval_start) of continuous jobs -> job id
        # (mapping, company, direction, interval start): jobs_continuous_interval.
        self.continuous: dict[tuple[str, str, str, datetime], str] = {}
        # job id -> (topic, partition)
        self.partitions: Nested[str, tuple[str, int], PartitionRow] = Nested()
        self.errors: list[JobError] = []
        self.last_error_id = 0
        # In the order written: the record log's ties go the last first.
        self.record_log: list[LogEntry] = []
        # (mapping, direction) -> synced_until
        self.synced: dict[tuple[str, str], datetime] = {}
        self.mappings: dict[str, MappingRow] = {}
        # (side, table name)
        self.checkpoints: dict[tuple[str, str], CheckpointRow] = {}
        self.snapshots: dict[str, SnapshotRow] = {}

    def copy(self) -> Tables:
        other = Tables()
        other.couplings = {m: p.copy() for m, p in self.couplings.items()}
        other.intents = self.intents.copy()
        other.statuses = self.statuses.copy()
        other.deleted = self.deleted.copy()
        other.writes = self.writes.copy()
        other.positions = self.positions.copy()
        other.epochs = self.epochs.copy()
        other.runs = self.runs.copy()
        other.jobs = self.jobs.copy()
        other.continuous = self.continuous.copy()
        other.partitions = self.partitions.copy()
        other.errors = self.errors.copy()
        other.last_error_id = self.last_error_id
        other.record_log = self.record_log.copy()
        other.synced = self.synced.copy()
        other.mappings = self.mappings.copy()
        other.checkpoints = self.checkpoints.copy()
        other.snapshots = self.snapshots.copy()
        return other


class MemoryDatabase:
    """The state of one ``memory_stores()`` bundle.

    ``clock`` gives every ``now()``; ``pause``, when set, is awaited by every
    store call before it acts (``MemoryStore._pause``), so a scheduler can
    interleave calls or raise at each one.

    ``copy()`` is an independent database with the same contents;
    ``snapshot()`` and ``restore()`` take and bring back the
    contents of this one. Holds of a ``MemorySingleton`` belong to their
    holders, not to the contents: neither copied nor restored."""

    def __init__(self, clock: Clock | None = None, *, pause: Pause | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.pause = pause
        self.t = Tables()
        self.holders: dict[str, Any] = {}
        # Claimed records, (mapping, side, id) -> holder: as holders above.
        self.claims: dict[tuple[str, Side, str], object] = {}

    def now(self) -> datetime:
        return utc(self.clock.now())

    def copy(self) -> MemoryDatabase:
        """An independent database holding what this one holds now."""
        other = MemoryDatabase(self.clock, pause=self.pause)
        other.t = self.t.copy()
        return other

    def snapshot(self) -> Tables:
        """The contents as they are now; later writes do not change it."""
        return self.t.copy()

    def restore(self, snapshot: Tables) -> None:
        """Brings back the contents of ``snapshot`` (which stays reusable)."""
        self.t = snapshot.copy()

    def pairs(self, mapping: str) -> Pairs | None:
        return self.t.couplings.get(mapping)


class MemoryStore:
    """What every memory store shares: its database and the pause hook."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._db = database

    @property
    def database(self) -> MemoryDatabase:
        return self._db

    async def _pause(self, what: str) -> None:
        """Awaited by every method, with its name, before it acts: a subclass
        or the database's ``pause`` hook can interleave there or raise (a crash
        before the call reached the database). After it, a call acts at once."""
        hook = self._db.pause
        if hook is not None:
            await hook(what)
