"""Applies a batch of changes of one mapping: fetch the facts the rules need,
decide with ``tablesync.core.plan``, write to the sides, and collect the
effects for one state-database transaction.

The order of effects is what keeps the invariants: creates are announced as
intents (committed) before the destination API is called; destination
writes happen before couplings, counters and positions are committed; the
caller commits Kafka offsets last."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from tablesync.core import filters
from tablesync.core.couplings import Coupling, Stamp, compare_stamps
from tablesync.core.effects import (
    BatchEffects,
    DueRecord,
    ErrorRow,
    Intent,
    StatusChange,
    WriteTarget,
    blocking,
)
from tablesync.core.events import (
    Direction,
    FieldValue,
    RecordChanged,
    RecordFailed,
    Side,
    other_side,
)
from tablesync.core.fieldmap import (
    LookupKey,
    Mapped,
    changes,
    lookup_keys,
    map_values,
    not_written_back,
    same_value,
    sent_values,
    written_image,
)
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
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
    Triage,
    Unchanged,
    Uncouple,
    Update,
    at_rest,
    counters_of,
    decide_coupled,
    decide_deletion,
    decide_uncoupled,
    made_by,
    row_of,
    same_failure,
    stamp_of,
    triage,
)
from tablesync.core.records import Create as CreateOp
from tablesync.core.records import Delete as DeleteOp
from tablesync.core.records import Missing, Rejected, Row, Stale, WriteOp, WriteResult, Written
from tablesync.core.records import Update as UpdateOp
from tablesync.errors import ApiUnavailable
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.ports.state import ApplyState, Couplings
from tablesync.runtime import faults
from tablesync.runtime.locks import KeyedLocks
from tablesync.runtime.together import together
from tablesync.settings import SyncSettings

__all__ = ["RETRY_TOPIC", "Applier", "Item", "JobEnsurer", "continuous_job_id"]

log = structlog.get_logger()

_JOB_NAMESPACE = uuid.UUID("0c7a4f61-7461-626c-6573-796e636a6f62")
_MATCH_CHUNK = 40
# How far before an intent's time a recovered create may carry its stamp:
# the API's clock and ours are different clocks.
_INTENT_SLACK = timedelta(seconds=5)
_MAX_ROUNDS = 3
RETRY_TOPIC = "(retry)"


def continuous_job_id(mapping: str, direction: Direction, interval_start: datetime) -> str:
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{mapping}:{direction}:{interval_start.isoformat()}"))


@dataclass(frozen=True, slots=True)
class Item:
    """One change to apply, where it came from, and the job it counts toward."""

    event: RecordChanged
    raw: bytes
    job: JobContext
    topic: str
    partition: int
    offset: int | None = None
    retry: DueRecord | None = None


@dataclass
class _Work:
    item: Item
    coupling: Coupling | None = None
    triage: Triage | None = None
    destination: Row | None = None
    candidates: list[Row] = field(default_factory=list)
    created_before: Row | None = None
    blocked: bool = False
    intent: Intent | None = None
    create_announced: bool = False
    refused: bool = False
    """The destination answered the write with an error: nothing was written."""
    tombstoned: bool = False
    """The record's deletion was seen before this version of it."""
    paired: bool = False
    """The coupling is the one an interrupted create of this deleted record
    made: written with the decision on the pair."""
    write_target: WriteTarget | None = None
    """The record this work announced it updates or deletes."""
    announced: set[WriteTarget] = field(default_factory=set)
    """Every write this work announced (a stale write may be decided again)."""
    written_before: bool = False
    """An attempt that did not commit announced the same write."""
    destination_changed: bool = False
    """The coupled destination's version is newer than the one last synced."""
    deleted_by_us: bool = False
    """The coupled destination is gone, deleted by an attempt that did not commit."""
    written_here: list[dict[str, FieldValue]] = field(default_factory=list)
    """What updates of this very record, announced by attempts that did not
    commit, would have left on it: its values that match are tablesync's."""
    decision: Decision | None = None
    mapped: Mapped | None = None
    written: Row | None = None
    source_after: Row | None = None
    api_error: str | None = None


class Applier:
    """The rules of one mapping, performed against the sides and the state database."""

    def __init__(
        self,
        mapping_name: str,
        mappings: MappingSet,
        apis: dict[Side, SideApi],
        couplings: Couplings,
        state: ApplyState,
        ensure_job: JobEnsurer,
        settings: SyncSettings,
        clock: Clock,
    ) -> None:
        self.mapping_name = mapping_name
        self.mappings = mappings
        self.apis = apis
        self.couplings = couplings
        self.state = state
        self.ensure_job = ensure_job
        self.settings = settings
        self.clock = clock
        self.failures: list[RecordFailed] = []
        # The two records of a coupling live on two partitions, applied side
        # by side: one pair is decided by one of them at a time.
        self._pairs: KeyedLocks[tuple[Side, str]] = KeyedLocks()

    @property
    def mapping(self) -> TableMapping:
        return self.mappings.get(self.mapping_name)

    def reload(self, mappings: MappingSet) -> None:
        self.mappings = mappings

    async def apply(self, items: Sequence[Item], effects: BatchEffects) -> None:
        """Applies ``items`` in order; a record appears at most once per round."""
        for chunk in _unique_chunks(items):
            await self._apply_chunk(chunk, effects)

    async def apply_side_by_side(
        self, groups: Sequence[Sequence[Item]], effects: BatchEffects
    ) -> None:
        """Applies each group (a partition's events, in order) beside the others,
        into one batch's effects. A record's events are all in one group, but
        the two records of a coupling are in two: each chunk holds its pairs
        while it decides, writes and records them, and one that waited sees
        what the other made of the pair (in ``effects``) before deciding."""
        if len(groups) <= 1:
            for group in groups:
                await self.apply(group, effects)
            return
        await together(*(self.apply(group, effects) for group in groups))

    async def sources_of(self, intents: Sequence[Intent]) -> list[RecordChanged]:
        """The sources of intents an attempt that died left open, as they are
        now: a version to apply again, or a deletion when the source is gone.
        An intent whose source is coupled by now was settled already; it is
        resolved here."""
        mapping = self.mapping
        now = self.clock.now()
        events: list[RecordChanged] = []
        for source in ("bc", "dataverse"):
            ids = [i.source_id for i in intents if i.source_side == source]
            if not ids:
                continue
            coupled = await self.couplings.by_ids(self.mapping_name, source, ids)
            dest = other_side(source)
            for i in intents:
                c = coupled.get(i.source_id)
                if i.source_side == source and c and i.dest_id and c.id_on(dest) != i.dest_id:
                    # Coupled by another path (a match from the other side) to
                    # another record: the one this create made is left over.
                    log.warning(
                        "create_left_over",
                        mapping=self.mapping_name,
                        source_side=source,
                        source_id=i.source_id,
                        record_id=i.dest_id,
                        coupled_to=c.id_on(dest),
                    )
            await self.state.resolve_intents(
                self.mapping_name, [(source, sid) for sid in ids if sid in coupled]
            )
            rest = [sid for sid in ids if sid not in coupled]
            table = mapping.table(source)
            found = await self.apis[source].get_many(table, rest) if rest else {}
            for sid in rest:
                row = found.get(sid)
                events.append(
                    _as_event(row, source, table)
                    if row is not None
                    else RecordChanged(
                        side=source,
                        table=table,
                        record_id=sid,
                        op="delete",
                        modified_at=now,
                        captured_at=now,
                    )
                )
        return events

    async def _apply_chunk(self, items: list[Item], effects: BatchEffects) -> None:
        work = [_Work(i) for i in items]
        await self._load_couplings(work, effects)
        held: set[tuple[Side, str]] = set()
        try:
            while not (wanted := _pair_keys(work)) <= held:
                # Read again once held: the group that held a pair before may
                # have coupled, updated or removed it meanwhile.
                self._pairs.release(held)
                held = set()
                await self._pairs.acquire(wanted)
                held = wanted
                await self._load_couplings(work, effects)
            await self._decide_and_write(work, effects)
        finally:
            self._pairs.release(held)

    async def _decide_and_write(self, work: list[_Work], effects: BatchEffects) -> None:
        mapping = self.mapping
        statuses = await self._load_statuses(work)
        deleted = await self._load_deleted(work, effects)
        for w in work:
            if (w.item.event.side, w.item.event.record_id) in deleted:
                # A late or replayed version of a record deleted since: never
                # created again on the other side, counted like any replay.
                w.tombstoned = True
                w.triage = Unchanged()
                continue
            w.triage = triage(w.item.event, mapping, w.item.job, w.coupling)
        await self._fetch(work)
        resolved = await self._resolve_lookups(work)
        for w in work:
            w.decision = self._decide(w, resolved)
        pending = work
        for _ in range(_MAX_ROUNDS):
            pending = await self._write(pending)
            if not pending:
                break
            await self._refetch(pending)
            for w in pending:
                w.decision = self._decide(w, resolved)
        for w in pending:
            w.decision = Fail("the record kept changing while it was being written", True)
        await self._write_back(work)
        for w in work:
            await self._record(
                w, effects, statuses.get((w.item.event.side, w.item.event.record_id))
            )

    # Facts

    async def _load_couplings(self, work: list[_Work], effects: BatchEffects) -> None:
        """The couplings of the chunk's records, as the batch has left them so far:
        an earlier chunk's couplings are not committed yet, but they are made."""
        pending: dict[tuple[Side, str], Coupling | None] = {}
        for c, _ in effects.couplings:
            pending[("bc", c.bc_id)] = pending[("dataverse", c.dv_id)] = c
        for c in effects.uncoupled:
            pending[("bc", c.bc_id)] = pending[("dataverse", c.dv_id)] = None
        for side in ("bc", "dataverse"):
            ids = [w.item.event.record_id for w in work if w.item.event.side == side]
            found = await self.couplings.by_ids(self.mapping_name, side, ids)
            for w in work:
                record = (w.item.event.side, w.item.event.record_id)
                if w.item.event.side == side:
                    w.coupling = pending[record] if record in pending else found.get(record[1])

    async def _load_deleted(
        self, work: list[_Work], effects: BatchEffects
    ) -> set[tuple[Side, str]]:
        """Of the chunk's uncoupled records, those known to be deleted."""
        uncoupled = [
            (w.item.event.side, w.item.event.record_id)
            for w in work
            if w.coupling is None and w.item.event.op == "upsert"
        ]
        if not uncoupled:
            return set()
        known = await self.state.deleted_among(self.mapping_name, uncoupled)
        return known | (set(effects.deleted) & set(uncoupled))

    async def _load_statuses(self, work: list[_Work]) -> dict[tuple[Side, str], DueRecord]:
        found: dict[tuple[Side, str], DueRecord] = {}
        for side in ("bc", "dataverse"):
            ids = [w.item.event.record_id for w in work if w.item.event.side == side]
            for sid, status in (await self.state.statuses_of(self.mapping_name, side, ids)).items():
                found[(side, sid)] = status
        return found

    async def _fetch(self, work: list[_Work]) -> None:
        await self._settle_announced(
            self.mapping,
            [w for w in work if w.coupling is None and not isinstance(w.triage, FetchCandidates)],
        )
        await self._fetch_destinations(work)
        uncoupled = [w for w in work if isinstance(w.triage, FetchCandidates)]
        if uncoupled:
            await self._fetch_candidates(self.mapping, uncoupled)

    async def _fetch_destinations(self, work: list[_Work]) -> None:
        """The coupled records of the other side, as they are now."""
        wanted: dict[Side, set[str]] = {"bc": set(), "dataverse": set()}
        for w in work:
            if isinstance(w.triage, FetchDestination):
                wanted[w.triage.side].add(w.triage.record_id)
        rows = await self._get_many(wanted)
        await self._load_written_here(work)
        checked: list[tuple[_Work, WriteTarget, bool]] = []
        for w in work:
            t = w.triage
            event = w.item.event
            if isinstance(t, FetchDestination):
                w.destination = rows.get((t.side, t.record_id))
                deleting = _deleting(w)
                if w.destination is None and deleting:
                    # Both gone: either may be a deletion of tablesync's own.
                    checked.append((w, (t.side, t.record_id, "delete"), True))
                    checked.append((w, (event.side, event.record_id, "delete"), True))
                if w.destination is not None and not deleting:
                    now = Stamp(w.destination.modified_at, w.destination.etag)
                    newer = compare_stamps(t.side, now, t.coupling.stamp_on(t.side)) == "newer"
                    w.destination_changed = newer
                    checked.append((w, (t.side, t.record_id, "update"), newer))
                else:
                    # A record gone or going: an update announced for it has
                    # nothing left to decide, and no later event would close it.
                    checked.append((w, (t.side, t.record_id, "update"), False))
                    if deleting:
                        checked.append((w, (event.side, event.record_id, "update"), False))
                    elif w.destination is None:
                        # A version of a record whose counterpart vanished:
                        # perhaps by tablesync's own hand, the pair half removed.
                        checked.append((w, (t.side, t.record_id, "delete"), False))
        if checked:
            ours = await self.state.announced_writes(self.mapping_name, [k for _, k, _ in checked])
            for w, key, changed in checked:
                if key not in ours:
                    continue
                if key[2] == "delete" and not _deleting(w):
                    w.deleted_by_us = True
                # Resolved with whatever this attempt decides, written or not.
                w.announced.add(key)
                if changed and not w.written_before:
                    # Changed (or gone) since the last sync, and announced by
                    # an attempt that did not commit: that attempt's write.
                    w.written_before = True
                    w.write_target = key

    async def _load_written_here(self, work: list[_Work]) -> None:
        """For versions of coupled records, what updates of those very records
        that an attempt announced and did not commit would have left on them:
        a version read back after such a write is (at least partly) its echo."""
        fresh = [w for w in work if isinstance(w.triage, FetchDestination) and not _deleting(w)]
        found = await self.state.written_images(
            self.mapping_name, [(w.item.event.side, w.item.event.record_id) for w in fresh]
        )
        for w in fresh:
            event = w.item.event
            images = found.get((event.side, event.record_id))
            if images is not None:
                w.written_here = images

    async def _get_many(self, wanted: dict[Side, set[str]]) -> dict[tuple[Side, str], Row]:
        mapping = self.mapping

        async def one(side: Side, ids: set[str]) -> dict[tuple[Side, str], Row]:
            if not ids:
                return {}
            found = await self.apis[side].get_many(mapping.table(side), sorted(ids))
            return {(side, rid): row for rid, row in found.items()}

        results = await together(*(one(s, ids) for s, ids in wanted.items()))
        merged: dict[tuple[Side, str], Row] = {}
        for r in results:
            merged.update(r)
        return merged

    async def _fetch_candidates(self, mapping: TableMapping, work: list[_Work]) -> None:
        for source in ("bc", "dataverse"):
            group = [w for w in work if w.item.event.side == source]
            if not group:
                continue
            dest = other_side(source)
            ids = [w.item.event.record_id for w in group]
            intents = await self.state.intents_of(self.mapping_name, source, ids)
            # Creates from the other side that may have made these records.
            blocked = blocking(
                await self.state.open_intents(self.mapping_name, dest, ids),
                [(w.item.event.record_id, w.item.event.fields) for w in group],
            )
            for w in group:
                w.intent = intents.get(w.item.event.record_id)
                w.blocked = w.item.event.record_id in blocked
            await self._recover_created(mapping, dest, [w for w in group if w.intent])
            if mapping.match:
                await self._match(mapping, source, dest, [w for w in group if not w.created_before])

    async def _settle_announced(self, mapping: TableMapping, work: list[_Work]) -> None:
        """Uncoupled records decided without a create (deleted since, out of the
        filter) whose own create was announced: that create's record, if it was
        made, is found and coupled; the intent is resolved either way, so it
        holds back no record of the other side any longer."""
        for source in ("bc", "dataverse"):
            group = [w for w in work if w.item.event.side == source]
            if not group:
                continue
            ids = [w.item.event.record_id for w in group]
            intents = await self.state.intents_of(self.mapping_name, source, ids)
            if not intents:
                continue
            announced = [w for w in group if w.item.event.record_id in intents]
            for w in announced:
                w.intent = intents[w.item.event.record_id]
            dest = other_side(source)
            await self._recover_created(mapping, dest, announced)
            deleting = [w for w in announced if _deleting(w)]
            # Found gone, but named and announced as deleted: an attempt that
            # settled this very intent deleted it and died before its commit.
            gone_ours = await self.state.announced_writes(
                self.mapping_name,
                [
                    (dest, w.intent.dest_id, "delete")
                    for w in deleting
                    if w.created_before is None and w.intent and w.intent.dest_id
                ],
            )
            for w in deleting:
                assert w.intent is not None
                row = w.created_before
                if row is not None:
                    dest_id, stamp = row.id, _stamp(row)
                elif w.intent.dest_id and (dest, w.intent.dest_id, "delete") in gone_ours:
                    dest_id, stamp = w.intent.dest_id, Stamp(w.intent.created_at, None)
                else:
                    continue
                # The pair the create made, decided like any coupled pair one
                # of whose records was deleted (the deletion policy applies).
                event = w.item.event
                ids_: dict[Side, str] = {source: event.record_id, dest: dest_id}
                stamps = {source: stamp_of(event), dest: stamp}
                key = self._key_of(row.fields) if row is not None and dest == "bc" else None
                w.coupling = Coupling.between(self.mapping_name, ids_, stamps, key)
                w.paired = True
                w.triage = FetchDestination(dest, dest_id, w.coupling)

    async def _recover_created(self, mapping: TableMapping, dest: Side, work: list[_Work]) -> None:
        """Finds the records that creates of these very records made before a crash."""
        if not work:
            return
        by_id = {w.intent.dest_id: w for w in work if w.intent and w.intent.dest_id}
        if by_id:
            found = await self.apis[dest].get_many(mapping.table(dest), sorted(by_id))
            for rid, row in found.items():
                by_id[rid].created_before = row
        unknown = [w for w in work if w.intent and not w.intent.dest_id]
        if not unknown:
            return
        # BC chose the id, and the crash lost it: the record is the one
        # created since the intent whose values are the ones we sent.
        since = min(w.intent.created_at for w in unknown if w.intent) - _INTENT_SLACK
        stamp_field = "lastModifiedDateTime" if dest == "bc" else "modifiedon"
        recent = await self.apis[dest].find(
            mapping.table(dest), filters.Compare(stamp_field, filters.Op.GE, since)
        )
        coupled = await self.couplings.coupled_among(
            self.mapping_name, dest, [r.id for r in recent]
        )
        named = await self.state.named_by_intents(
            self.mapping_name, other_side(dest), [r.id for r in recent]
        )
        free = [r for r in recent if r.id not in coupled and r.id not in named]
        for w in unknown:
            assert w.intent is not None
            sent = w.intent.sent
            if not sent and w.item.event.op == "upsert":
                # Announced before intents kept what they sent.
                mapped = self._map(w.item.event, creating=True, resolved={})
                sent = sent_values(changes(mapped, dest, None))
            made = made_by(sent, free)
            if made is not None:
                w.created_before = made
                free.remove(made)

    async def _match(
        self, mapping: TableMapping, source: Side, dest: Side, work: list[_Work]
    ) -> None:
        keyed: list[tuple[_Work, tuple[str, ...]]] = []
        for w in work:
            values = tuple(
                _text(w.item.event.fields.get(m.bc if source == "bc" else m.dataverse))
                for m in mapping.match
            )
            if all(values):
                keyed.append((w, values))
        dest_fields = [m.dataverse if dest == "dataverse" else m.bc for m in mapping.match]
        chunks = [keyed[i : i + _MATCH_CHUNK] for i in range(0, len(keyed), _MATCH_CHUNK)]
        await together(*(self._match_chunk(mapping, dest, dest_fields, chunk) for chunk in chunks))

    async def _match_chunk(
        self,
        mapping: TableMapping,
        dest: Side,
        dest_fields: list[str],
        chunk: list[tuple[_Work, tuple[str, ...]]],
    ) -> None:
        alternatives = [
            filters.conjoin(
                *(
                    filters.Compare(f, filters.Op.EQ, v)
                    for f, v in zip(dest_fields, values, strict=True)
                )
            )
            for _, values in chunk
        ]
        query = _disjoin(alternatives)
        query = filters.conjoin(query, mapping.filter(dest))
        assert query is not None
        rows = await self.apis[dest].find(mapping.table(dest), query)
        coupled = await self.couplings.coupled_among(self.mapping_name, dest, [r.id for r in rows])
        free = [r for r in rows if r.id not in coupled]
        for w, values in chunk:
            w.candidates = [
                r
                for r in free
                if all(
                    _equal_match(r.fields.get(f), v, m.case_sensitive)
                    for f, v, m in zip(dest_fields, values, mapping.match, strict=True)
                )
            ]

    async def _resolve_lookups(self, work: list[_Work]) -> dict[LookupKey, str]:
        mapping = self.mapping
        keys: set[LookupKey] = set()
        for w in work:
            source = self._values_source(w)
            if source is not None:
                event, direction = source
                keys |= lookup_keys(mapping, direction, event.fields)
            t = w.triage
            if (
                isinstance(t, FetchDestination)
                and w.destination is not None
                and w.item.event.op == "upsert"
                and w.destination_changed
                and mapping.allows(direction_of(t.side))
            ):
                # The way back, for telling whether both records are at rest.
                keys |= lookup_keys(mapping, direction_of(t.side), w.destination.fields)
        return await self.couplings.resolve(keys) if keys else {}

    def _values_source(self, w: _Work) -> tuple[RecordChanged, Direction] | None:
        """The record whose values this work maps, and which way."""
        t = w.triage
        event = w.item.event
        if isinstance(t, FetchCandidates):
            return event, direction_of(event.side)
        if isinstance(t, FetchDestination):
            if _deleting(w):
                if w.destination is None:
                    return None
                survivor = _as_event(w.destination, t.side, self.mapping.table(t.side))
                return survivor, direction_of(t.side)
            return event, direction_of(event.side)
        return None

    async def _refetch(self, work: list[_Work]) -> None:
        await self._fetch_destinations(work)
        for w in work:
            w.written = None
            w.api_error = None

    # Decisions

    def _map(
        self, event: RecordChanged, *, creating: bool, resolved: dict[LookupKey, str]
    ) -> Mapped:
        return map_values(
            self.mapping,
            direction_of(event.side),
            event.fields,
            resolved,
            self.mappings,
            creating=creating,
        )

    def _decide(self, w: _Work, resolved: dict[LookupKey, str]) -> Decision:
        mapping = self.mapping
        event = w.item.event
        t = w.triage
        if isinstance(t, Ignore) and w.created_before is not None:
            # An interrupted create made the record before this version fell out
            # of scope: coupled as made, this version not synced.
            row = w.created_before
            dest = other_side(event.side)
            return Create(
                dest, {}, row.id, event.record_id, stamp_of(event), matched=row, recovered=True
            )
        if isinstance(t, Ignore | Unchanged | Pending):
            return t
        if isinstance(t, FetchDestination):
            if _deleting(w):
                survivor = w.destination
                mapped = None
                if survivor is not None:
                    as_event = _as_event(survivor, t.side, mapping.table(t.side))
                    mapped = self._map(as_event, creating=True, resolved=resolved)
                w.mapped = mapped
                return decide_deletion(
                    mapping,
                    t.coupling,
                    event.side,
                    survivor,
                    mapped,
                    deleted_here=w.write_target[0] if w.write_target else None,
                )
            if w.destination is None and w.deleted_by_us:
                # An attempt that did not commit deleted the counterpart: it was
                # removing the pair (this record's own deletion comes later on
                # its partition). Completed, and its deletion counted, here.
                return Remove(t.side, t.record_id, t.coupling)
            if w.destination is None:
                mapped = self._map(event, creating=True, resolved=resolved)
                w.mapped = mapped
                return decide_deletion(mapping, t.coupling, t.side, row_of(event), mapped)
            mapped = self._map(event, creating=False, resolved=resolved)
            # What tablesync itself wrote to this record is no change of the user's.
            mapped = not_written_back(mapped, event.side, event.fields, w.written_here)
            w.mapped = mapped
            decision = decide_coupled(event, mapping, t.coupling, w.destination, mapped)
            if isinstance(decision, Unchanged) and w.destination_changed:
                back = None
                if mapping.allows(direction_of(t.side)):
                    as_event = _as_event(w.destination, t.side, mapping.table(t.side))
                    back = self._map(as_event, creating=False, resolved=resolved)
                decision = at_rest(
                    decision, event, mapping, w.destination, back, ours=w.written_before
                )
            return decision
        if isinstance(t, FetchCandidates):
            mapped = self._map(event, creating=True, resolved=resolved)
            w.mapped = mapped
            return decide_uncoupled(
                event,
                mapping,
                mapped,
                w.candidates,
                created_before=w.created_before,
                blocked_by_intent=w.blocked,
                announced=w.intent is not None,
            )
        raise AssertionError(f"unhandled triage {t!r}")

    # Writes

    async def _write(self, work: list[_Work]) -> list[_Work]:
        """Performs every writing decision; returns the work to decide again
        (stale ETags and vanished destinations)."""
        mapping = self.mapping
        intents = []
        for w in work:
            d = w.decision
            if isinstance(d, Create) and d.matched is None:
                w.decision = d = replace(d, record_id=self._new_id(w, d.side))
                w.create_announced = True
                intents.append(
                    Intent(
                        self.mapping_name,
                        w.item.event.side,
                        w.item.event.record_id,
                        d.record_id,
                        self.clock.now(),
                        sent_values(d.payload),
                    )
                )
        await self.state.record_intents(intents)
        for w in work:
            match w.decision:
                case Update(side=side, record_id=rid):
                    w.write_target = (side, rid, "update")
                case Remove(side=side, record_id=rid):
                    w.write_target = (side, rid, "delete")
            if w.write_target is not None:
                w.announced.add(w.write_target)
        targets = [w.write_target for w in work if w.write_target]
        if targets:
            images = {
                w.write_target: written_image(mapping, d.side, w.mapped, w.destination.fields)
                for w in work
                if w.write_target is not None
                and isinstance(d := w.decision, Update)
                and w.mapped is not None
                and w.destination is not None
            }
            earlier = await self.state.announce_writes(self.mapping_name, targets, images)
            for w in work:
                w.written_before = w.write_target in earlier
        ops: dict[Side, list[tuple[_Work, WriteOp]]] = {"bc": [], "dataverse": []}
        for w in work:
            op = _operation(w.decision)
            if op is not None:
                side = _write_side(w.decision)
                ops[side].append((w, op))
        results = await together(
            *(self._write_side(mapping, side, pairs) for side, pairs in ops.items() if pairs)
        )
        # BC picks a new record's id: kept at once (even when another write of
        # the batch is refused for throttling and the batch is tried again), so
        # the next attempt finds the record by its id rather than by its values.
        await self.state.set_intent_destination(
            self.mapping_name,
            [
                (w.item.event.side, w.item.event.record_id, result.row.id)
                for pairs in results
                for w, result in pairs
                if w.create_announced
                and isinstance(w.decision, Create)
                and w.decision.record_id is None
                and isinstance(result, Written)
                and result.row is not None
            ],
        )
        _raise_if_unavailable(results)
        if results:
            faults.point("apply.after_write", self.mapping_name)
        again: list[_Work] = []
        for pairs in results:
            for w, result in pairs:
                if self._absorb(w, result):
                    again.append(w)
        return again

    async def _write_back(self, work: list[_Work]) -> None:
        """Sends back what the other side filled in on a create (a BC number from
        its number series, say) where the mapping carries it back, so both
        records agree at once rather than at their next change."""
        mapping = self.mapping
        created = [
            w
            for w in work
            if isinstance(w.decision, Create)
            and w.decision.matched is None
            and w.written is not None
            and mapping.allows(direction_of(w.decision.side))
        ]
        if not created:
            return
        keys: set[LookupKey] = set()
        for w in created:
            assert w.written is not None and isinstance(w.decision, Create)
            keys |= lookup_keys(mapping, direction_of(w.decision.side), w.written.fields)
        resolved = await self.couplings.resolve(keys) if keys else {}
        ops: dict[Side, list[tuple[_Work, WriteOp]]] = {"bc": [], "dataverse": []}
        for w in created:
            assert w.written is not None and isinstance(w.decision, Create)
            event = w.item.event
            back = map_values(
                mapping,
                direction_of(w.decision.side),
                w.written.fields,
                resolved,
                self.mappings,
                creating=False,
            )
            if back.unresolved:
                continue
            # Only what the source left blank and the create filled in: a value
            # the source has is the user's, even if the other side shortened it.
            payload = {
                name: value
                for name, value in changes(back, event.side, event.fields).items()
                if _blank(event.fields.get(name.removesuffix("@odata.bind")))
            }
            if payload:
                ops[event.side].append((w, UpdateOp(event.record_id, payload, event.etag)))
        results = await together(
            *(self._write_side(mapping, side, pairs) for side, pairs in ops.items() if pairs)
        )
        for pairs in results:
            for w, result in pairs:
                # A source changed meanwhile keeps its value; its own change syncs next.
                if isinstance(result, Written) and result.row is not None:
                    w.source_after = result.row

    @staticmethod
    def _new_id(w: _Work, side: Side) -> str | None:
        """The id of a record to create: Dataverse takes the caller's, announced
        in the intent first (and kept by a replay of the same create); BC picks its own."""
        if side != "dataverse":
            return None
        if w.intent is not None and w.intent.dest_id:
            return w.intent.dest_id
        return str(uuid.uuid4())

    async def _write_side(
        self, mapping: TableMapping, side: Side, pairs: list[tuple[_Work, WriteOp]]
    ) -> list[tuple[_Work, WriteResult]]:
        results = await self.apis[side].write(mapping.table(side), [op for _, op in pairs])
        return list(zip((w for w, _ in pairs), results, strict=True))

    def _absorb(self, w: _Work, result: WriteResult) -> bool:
        """Takes a write's result; True when the work must be decided again."""
        d = w.decision
        match result:
            case Written(row=row):
                w.written = row
                return False
            case Stale():
                if isinstance(d, Update) and isinstance(w.triage, FetchDestination):
                    return True
                w.decision = Fail("the record changed while it was being written; retrying", True)
                return False
            case Missing():
                if isinstance(d, Update) and isinstance(w.triage, FetchDestination):
                    # The counterpart vanished: a deletion, decided on the next round.
                    return True
                if isinstance(d, Remove):
                    if not w.written_before:
                        w.decision = Uncouple(
                            d.coupling, "already deleted on the other side", ("bc", "dataverse")
                        )
                    # else: an attempt that crashed before its commit deleted it.
                    return False
                w.decision = Fail(result.message or "the record does not exist", True)
                return False
            case Rejected(status=status, message=message):
                w.refused = True
                w.decision = Fail(f"{message} (HTTP {status})", status in (408, 409, 423))
                return False
        return False

    # Effects

    async def _record(self, w: _Work, effects: BatchEffects, status: DueRecord | None) -> None:
        d = w.decision
        assert d is not None
        item = w.item
        event = item.event
        direction = _written_towards(d) or direction_of(event.side)
        job_id = await self._job_for(item, direction)
        now = self.clock.now()
        resolved = True
        # Decided again later (a retry of the same event): what tablesync wrote
        # to the record must still be known then.
        again = False
        if w.paired and isinstance(d, Remove | Uncouple):
            # Made (and counted) before it is removed, in the same commit.
            effects.couplings.append((d.coupling, direction_of(event.side)))
        if w.paired and isinstance(d, Remove | Uncouple | MarkDeleted | Restore):
            # The interrupted create happened: counted with the pair's coupling,
            # in the job of the direction it was made (a restore writes back).
            made_in = await self._job_for(item, direction_of(event.side))
            if made_in is not None:
                effects.count(made_in, item.topic, item.partition, "inserted")
        match d:
            case Create(matched=None) | Create(recovered=True) | Restore():
                self._couple_created(w, d, effects, direction)
            case Create():
                self._couple_matched(w, d, effects, direction)
                if w.intent is not None:
                    # A create that a crash interrupted, settled by a match.
                    effects.resolved_intents.append((event.side, event.record_id))
            case Update():
                stamp = _stamp(w.written) if w.written else d.coupling.stamp_on(d.side)
                effects.couplings.append((d.coupling.with_stamp(d.side, stamp), direction))
            case Unchanged(coupling=coupling):
                if coupling is not None:
                    effects.couplings.append((coupling, None))
            case Remove(coupling=c):
                effects.uncoupled.append(c)
                effects.deleted.extend([("bc", c.bc_id), ("dataverse", c.dv_id)])
            case Uncouple(coupling=c, gone=gone):
                effects.uncoupled.append(c)
                effects.deleted.extend((side, c.id_on(side)) for side in gone)
            case MarkDeleted():
                effects.couplings.append((d.coupling, None))
                resolved = False
                self._status(w, effects, status, job_id, "skipped", "deleted", d.message, now)
            case Pending():
                resolved = False
                again = True
                self._status(w, effects, status, job_id, "pending", "lookup", d.message, now)
            case Fail():
                resolved = False
                given_up = self._status(
                    w, effects, status, job_id, "failed", "error", d.message, now
                )
                again = not given_up
                if given_up and w.intent is not None and w.created_before is None:
                    # Skipped until an operator acts: its announced create, of
                    # which no record was found, may hold nothing back meanwhile.
                    effects.resolved_intents.append((event.side, event.record_id))
            case Skip(error=True):
                resolved = False
                self._status(w, effects, status, job_id, "skipped", "conflict", d.message, now)
            case Skip() | Ignore():
                pass
        if w.create_announced and w.refused:
            # Refused: nothing was created, so nothing may wait for it.
            effects.resolved_intents.append((event.side, event.record_id))
        if w.intent is not None and not isinstance(d, Create | Pending | Fail):
            # Decided otherwise, after the create's record was looked for.
            effects.resolved_intents.append((event.side, event.record_id))
        # Done, or refused by the API: either way no write is in flight.
        effects.resolved_writes.extend(w.announced)
        if w.written_here and not again:
            # Tablesync's own write to this record is settled by this decision.
            effects.resolved_writes.append((event.side, event.record_id, "update"))
        if resolved and status is not None:
            effects.cleared.append((event.side, event.record_id))
        # Ids and outcome only: field values stay out of the logs.
        log.debug(
            "record_decided",
            mapping=self.mapping_name,
            side=event.side,
            record_id=event.record_id,
            offset=item.offset,
            decision=type(d).__name__,
            written_before=w.written_before or None,
            written_here=bool(w.written_here) or None,
            announced_create=(w.intent is not None) or None,
            recovered=w.created_before.id if w.created_before else None,
        )
        counters = counters_of(d)
        if item.retry is not None and not resolved and counters and counters[0] != "skipped":
            # A retry that failed again is already listed; counting it in
            # every interval would inflate the job log.
            counters = ()
        if counters and job_id is not None:
            if isinstance(d, Remove | Uncouple):
                effects.count_if_uncoupled(
                    d.coupling, job_id, item.topic, item.partition, *counters
                )
            else:
                effects.count(job_id, item.topic, item.partition, *counters)

    def _couple_created(
        self, w: _Work, d: Create | Restore, effects: BatchEffects, direction: Direction
    ) -> None:
        event = w.item.event
        row = w.written or (d.matched if isinstance(d, Create) else None)
        if row is None:
            return
        if isinstance(d, Restore):
            # The new coupling replaces the old one: same id on the surviving side.
            coupling = d.coupling
            ids: dict[Side, str] = {"bc": coupling.bc_id, "dataverse": coupling.dv_id}
            ids[d.side] = row.id
            stamps: dict[Side, Stamp] = {"bc": coupling.bc_stamp, "dataverse": coupling.dv_stamp}
            stamps[d.side] = _stamp(row)
            key = self._key_of(row.fields) if d.side == "bc" else coupling.bc_key
            new = Coupling.between(self.mapping_name, ids, stamps, key)
            effects.couplings.append((replace(new, bc_deleted=False, dv_deleted=False), direction))
            return
        ids = {event.side: event.record_id, d.side: row.id}
        source = _stamp(w.source_after) if w.source_after else stamp_of(event)
        stamps = {event.side: source, d.side: _stamp(row)}
        bc_row_fields = event.fields if event.side == "bc" else row.fields
        new = Coupling.between(self.mapping_name, ids, stamps, self._key_of(bc_row_fields))
        effects.couplings.append((new, direction))
        effects.resolved_intents.append((event.side, event.record_id))

    def _couple_matched(
        self, w: _Work, d: Create, effects: BatchEffects, direction: Direction
    ) -> None:
        event = w.item.event
        assert d.matched is not None
        row = w.written or d.matched
        ids = {event.side: event.record_id, d.side: row.id}
        stamps = {event.side: stamp_of(event), d.side: _stamp(row)}
        bc_fields = event.fields if event.side == "bc" else row.fields
        effects.couplings.append(
            (Coupling.between(self.mapping_name, ids, stamps, self._key_of(bc_fields)), direction)
        )

    def _key_of(self, bc_fields: Mapping[str, FieldValue]) -> str | None:
        key_field = self.mapping.bc_key
        if key_field is None:
            return None
        value = bc_fields.get(key_field)
        return value if isinstance(value, str) and value.strip() else None

    def _status(
        self,
        w: _Work,
        effects: BatchEffects,
        previous: DueRecord | None,
        job_id: str | None,
        status: str,
        reason: str,
        message: str,
        now: datetime,
    ) -> bool:
        """Lists the record as not synced; True when it is now skipped."""
        event = w.item.event
        attempts = (previous.attempts + 1) if previous else 1
        same = (
            previous.same_failures + 1
            if previous and same_failure(previous.message, message)
            else 1
        )
        if status == "failed" and same >= self.settings.skip_after_failures:
            status = "skipped"
        next_attempt = None
        if status in ("pending", "failed"):
            delay = min(
                self.settings.retry_backoff_s * (2 ** min(attempts - 1, 16)),
                self.settings.retry_backoff_max_s,
            )
            next_attempt = now + timedelta(seconds=delay)
        waiting = tuple(
            sorted(
                {
                    t
                    for u in (w.mapped.unresolved if w.mapped else ())
                    if u.field.lookup
                    for t in u.field.lookup.mappings
                }
                # Held for a create in flight: retried once that create is coupled.
                | ({self.mapping_name} if w.blocked else set())
            )
        )
        destination = self._destination_id(w)
        effects.statuses.append(
            StatusChange(
                mapping=self.mapping_name,
                source_side=event.side,
                source_id=event.record_id,
                status=status,
                reason=reason,
                message=message,
                destination_id=destination,
                next_attempt_at=next_attempt,
                job_id=job_id,
                event=w.item.raw,
                waiting_for=waiting,
                same_failures=same,
                attempts=attempts,
            )
        )
        first_time = previous is None or previous.message != message or previous.status != status
        if job_id is not None and (status != "pending" or first_time):
            direction = direction_of(event.side)
            effects.errors.append(
                ErrorRow(
                    job_id,
                    self.mapping_name,
                    direction,
                    event.side,
                    event.record_id,
                    destination,
                    message,
                )
            )
            self.failures.append(
                RecordFailed(
                    mapping=self.mapping_name,
                    direction=direction,
                    source_id=event.record_id,
                    message=message,
                    failed_at=now,
                    job_id=job_id,
                    destination_id=destination,
                    attempts=attempts,
                    skipped=status == "skipped",
                )
            )
        return status == "skipped"

    def _destination_id(self, w: _Work) -> str | None:
        if w.coupling is not None:
            return w.coupling.id_on(other_side(w.item.event.side))
        return None

    async def _job_for(self, item: Item, direction: Direction) -> str | None:
        job = item.job
        if job.job_id is not None and job.direction in (None, direction):
            return job.job_id
        interval = self.settings.continuous_job_interval_s
        now = self.clock.now()
        start = datetime.fromtimestamp((now.timestamp() // interval) * interval, tz=now.tzinfo)
        job_id = continuous_job_id(self.mapping_name, direction, start)
        await self.ensure_job(job_id, direction, start)
        return job_id


CreateContinuousJob = Callable[[str, str, str, datetime], Awaitable[None]]


class JobEnsurer:
    """Makes sure the continuous job row of an interval exists, once per process."""

    def __init__(self, mapping: str, create: CreateContinuousJob) -> None:
        self._mapping = mapping
        self._create = create
        self._known: set[str] = set()

    async def __call__(self, job_id: str, direction: Direction, start: datetime) -> None:
        if job_id in self._known:
            return
        await self._create(job_id, self._mapping, direction, start)
        self._known.add(job_id)
        if len(self._known) > 1000:
            self._known = {job_id}


def _pair_keys(work: Iterable[_Work]) -> set[tuple[Side, str]]:
    """The records a chunk decides about: its own, and their counterparts."""
    keys: set[tuple[Side, str]] = set()
    for w in work:
        event = w.item.event
        keys.add((event.side, event.record_id.lower()))
        if w.coupling is not None:
            dest = other_side(event.side)
            keys.add((dest, w.coupling.id_on(dest).lower()))
    return keys


def _deleting(w: _Work) -> bool:
    """Whether the work decides the deletion of its own record: a delete event,
    or a version of a record whose deletion was seen before."""
    return w.item.event.op == "delete" or w.tombstoned


def _written_towards(d: Decision) -> Direction | None:
    """The direction of the write a decision makes: a change from BC whose
    counterpart vanished may delete or restore on either side, and it counts
    in the job of the side it wrote to."""
    if isinstance(d, Create | Update | Remove | Restore):
        return direction_of(other_side(d.side))
    return None


def _raise_if_unavailable(results: list[list[tuple[_Work, WriteResult]]]) -> None:
    """A write refused for throttling or a server fault outlived the connector's
    retries: the whole batch is tried again later rather than any record failing.
    Writes are idempotent (ETags, deterministic ids, create intents), so
    repeating the ones that did happen is safe."""
    for pairs in results:
        for w, result in pairs:
            if isinstance(result, Rejected) and (
                result.status in (0, 408, 429) or result.status >= 500
            ):
                side = _write_side(w.decision)
                raise ApiUnavailable(
                    f"writes still refused after retries: HTTP {result.status} {result.message}",
                    side=side,
                    status=result.status,
                )


def _unique_chunks(items: Iterable[Item]) -> list[list[Item]]:
    """Splits ``items`` so no record appears twice in a chunk, order kept."""
    chunks: list[list[Item]] = [[]]
    seen: set[tuple[Side, str]] = set()
    for item in items:
        key = (item.event.side, item.event.record_id)
        if key in seen:
            chunks.append([])
            seen = set()
        chunks[-1].append(item)
        seen.add(key)
    return [c for c in chunks if c]


def _operation(d: Decision | None) -> WriteOp | None:
    match d:
        case Create(matched=None, payload=payload, record_id=record_id):
            return CreateOp(payload, record_id)
        case Create(matched=row, payload=payload) if payload and row is not None:
            return UpdateOp(row.id, payload, row.etag)
        case Update(record_id=rid, payload=payload, etag=etag):
            return UpdateOp(rid, payload, etag)
        case Remove(record_id=rid):
            return DeleteOp(rid, None)
        case Restore(payload=payload, record_id=record_id):
            return CreateOp(payload, record_id)
    return None


def _write_side(d: Decision | None) -> Side:
    assert isinstance(d, Create | Update | Remove | Restore)
    return d.side


def _stamp(row: Row) -> Stamp:
    return Stamp(row.modified_at, row.etag)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _equal_match(value: object, wanted: str, case_sensitive: bool) -> bool:
    if not isinstance(value, str):
        return False
    if case_sensitive:
        return value.strip() == wanted
    return same_value(value, wanted, code=True)


def _disjoin(exprs: list[filters.Expr | None]) -> filters.Expr | None:
    result: filters.Expr | None = None
    for e in exprs:
        if e is None:
            continue
        result = e if result is None else filters.Or(result, e)
    return result


def _as_event(row: Row, side: Side, table: str) -> RecordChanged:
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
