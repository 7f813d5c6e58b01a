"""The capture service of one side: changes, snapshots and deletions to Kafka.

Three loops share one producer:

- per table, read what changed since the checkpoint and publish it, moving the
  checkpoint only after the broker acknowledged every event:

  - a Dataverse table with change tracking: follow its delta link; the rows
    changed and the rows deleted since, whatever their stamps say, so a row
    committed late is never missed. The delta link is the
    checkpoint (the watermark is kept beside it). A link refused as expired:
    read the table again for a new one, publishing the rows stamped within the
    look-back of the watermark, and scan its deletions once;
  - any other table (every BC table): poll rows stamped since the watermark,
    less ``poll_overlap_s``, and every ``lookback_interval_s`` less the whole
    ``lookback_s``: a row stamped before its transaction committed is still
    seen if it committed within the look-back. A version published already is
    not published again (by ETag). Every ``reconcile_interval_s`` a full read
    of every row's version publishes those committed later still;
  - either way, a row whose version every mapping reading the table recorded
    on its coupling already is not published (``capture_skips_echoes``): it
    is apply's own write read back, which apply would count unchanged. One
    read before apply committed that coupling is published, and apply
    recognises it;
- serve ``SnapshotRequested`` for this side: publish the rows a job needs,
  tagged with its id, then an end marker on every partition;
- every so often, for the tables polled by stamp, compare the coupled records
  with the ids that still exist; a vanished id counts as deleted only if a
  direct read does not find it either, and a scan that would remove more than
  ``delete_scan_max_share`` of a mapping's couplings (and more than
  ``delete_scan_min_cap`` records) stops and raises an alert instead of
  publishing.

A poll by stamp publishes and checkpoints page by page (the pages come in
stamp order): a long backlog is never held in memory whole, and a failure
keeps what the pages before it moved. A row whose event is over the log's
size limit goes to the dead-letter topic (its id, size and the limit) and
its table goes on. A read the side refuses is waited out on its table only.

One capture per side works at a time: it works while it holds the side's
lease (``runtime.lease``); a second process of the side waits as its standby."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from tablesync import metrics
from tablesync.adapters.avro import Codec
from tablesync.adapters.transient import TRANSIENT
from tablesync.core import filters
from tablesync.core.capture_rules import (
    Seen,
    confirmed,
    forget_before,
    missed,
    overreach,
    remember,
    scan_pause,
    synced_already,
    unpublished,
    vanished,
    version_of,
)
from tablesync.core.events import RecordChanged, Side, SnapshotEnd, SnapshotRequested
from tablesync.core.mappings import MappingSet
from tablesync.core.records import Row
from tablesync.core.topics import Topics
from tablesync.errors import (
    ChangeTrackingUnavailable,
    DecodeError,
    DeltaLinkExpired,
    MessageTooLarge,
    ReadRefused,
)
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.ports.log import ConsumerFactory, Message, Publisher, TopicPartition
from tablesync.ports.state import Singleton, StateStores
from tablesync.runtime import faults
from tablesync.runtime.consume import Batch, ConsumeLoop, Subscription, next_offsets
from tablesync.runtime.deadletter import DeadLetters
from tablesync.runtime.health import Beat, Loops, no_beat, unwatched
from tablesync.runtime.lease import Lease, LeasedPublisher
from tablesync.runtime.refused import noted
from tablesync.runtime.stopping import sleep_or_stop, until_done
from tablesync.runtime.streams import read_ahead
from tablesync.runtime.together import together
from tablesync.settings import Settings

__all__ = ["CaptureService"]

log = structlog.get_logger()

_START_SLACK = timedelta(seconds=5)
_TOMBSTONE_MEMORY = timedelta(minutes=10)


@dataclass
class _TableState:
    watermark: datetime
    recent: dict[str, Seen] = field(default_factory=dict)
    """Rows published within the look-back window: their versions, by id."""
    floor: datetime | None = None
    """No read goes behind this: the first checkpoint, when this process made it."""
    tracking: bool | None = None
    """Whether the table follows change tracking (None: not known yet)."""
    delta_link: str | None = None
    resume_from: datetime | None = None
    """A read for a new delta link publishes the rows stamped from here on."""
    last_lookback: float | None = None
    last_reconcile: float | None = None
    known: dict[str, str] | None = None
    """The version of every row capture read, by id, once a reconcile listed them all."""
    polls: int = 0


class CaptureService:
    def __init__(
        self,
        settings: Settings,
        side: Side,
        *,
        stores: StateStores,
        api: SideApi,
        publisher: Publisher,
        consumers: ConsumerFactory,
        codec: Codec,
        clock: Clock,
        topics: Topics,
        singleton: Singleton,
        loops: Loops = unwatched,
    ) -> None:
        self.settings = settings
        self.side = side
        self._loops = loops
        self._snapshot_beat: Beat = no_beat
        self._beats: dict[str, Beat] = {}
        self.checkpoints = stores.checkpoints
        self.api = api
        self.lease = Lease(
            singleton, what=f"capture {side}", clock=clock, renew_s=settings.sync.lease_renew_s
        )
        self.publisher = LeasedPublisher(publisher, self.lease)
        self.deadletters = DeadLetters(
            self.publisher, topics.deadletter, f"{topics.prefix}tablesync.capture.{side}"
        )
        self.consumers = consumers
        self.codec = codec
        self.clock = clock
        self.topics = topics
        self.couplings = stores.couplings
        self.mapping_store = stores.mappings
        self._mappings: MappingSet | None = None
        self._mappings_version: datetime | None = None
        self._tombstones: dict[tuple[str, str], datetime] = {}
        self._tracked: dict[str, bool] = {}
        """Tables known to follow change tracking (True) or to be polled by stamp."""
        self._scan_requests = 0
        """API requests of the deletion scans in the round being made."""
        self._scan_due: set[str] = set()
        """Tracked tables whose deletions a scan must look for once (their link expired)."""
        self.published = 0
        self.echoes = 0
        """Rows read and not published: versions their couplings record already."""

    async def run(self, stop: asyncio.Event) -> None:
        await self.lease.serve(stop, self._work, standby=self._standing_by)

    def _loop(self, name: str, every_s: float = 0.0) -> Beat:
        beat = self._beats[name] = self._loops(name, every_s=every_s)
        return beat

    def _standing_by(self) -> None:
        # A standby waiting for the lease is ready, also after it held it once.
        for beat in self._beats.values():
            beat()

    async def _work(self, stop: asyncio.Event) -> None:
        loaded: list[MappingSet] = []

        async def load() -> None:
            loaded[:] = [await self.mapping_store.load()]

        # The database can go away between taking the lease and this read.
        if not await until_done(stop, load, what=f"capture {self.side} start", transient=TRANSIENT):
            return
        tables = loaded[0].tables(self.side)
        log.info("capture_started", side=self.side, tables=list(tables), epoch=self.lease.epoch)
        loops = [self._poll_loop(t, stop) for t in tables]
        loops.append(self._snapshot_loop(stop))
        loops.append(self._deletion_loop(tables, stop))
        await together(*loops)
        log.info("capture_stopped", side=self.side, published=self.published)

    async def _guarded(self, what: str, stop: asyncio.Event, step: Any) -> None:
        """Runs one step of a loop; a transient failure is logged and retried
        later. A read the side refuses (a permission, a query it will not
        serve) is one too: the step's table waits for an operator to fix it,
        each try logged with the side's reason, while the others go on."""
        try:
            await step()
        except ReadRefused as refused:
            noted(refused, capture=self.side, step=what)
            await sleep_or_stop(stop, 1.0)
        except TRANSIENT as exc:
            log.warning(
                "capture_transient_failure",
                side=self.side,
                step=what,
                error=f"{type(exc).__name__}: {exc}",
            )
            await sleep_or_stop(stop, 1.0)

    # Continuous change capture

    async def _poll_loop(self, table: str, stop: asyncio.Event) -> None:
        state: _TableState | None = None
        interval = self.settings.sync.poll_interval_s
        beat = self._loop(f"capture {self.side} {table}", every_s=interval)
        while not stop.is_set():
            beat()
            started = self.clock.monotonic()

            async def step() -> None:
                nonlocal state
                if state is None:
                    state = await self._open(table)
                await self._poll_once(table, state)

            await self._guarded(f"poll {table}", stop, step)
            await sleep_or_stop(stop, max(0.0, interval - (self.clock.monotonic() - started)))

    async def _open(self, table: str) -> _TableState:
        stored = await self.checkpoints.watermark(self.side, table)
        if stored is None:
            # Capture covers what changes from now on; rows already there are the
            # business of a full synchronization.
            start = self.clock.now() - _START_SLACK
            await self._store_checkpoint(table, start)
            state = _TableState(start, floor=start, resume_from=start)
        else:
            state = _TableState(stored, resume_from=stored - self._lookback)
        if self.side == "dataverse" and self.settings.sync.change_tracking:
            state.delta_link = await self.checkpoints.delta_link(self.side, table)
            if state.delta_link is None and stored is not None:
                # A capture before this one published rows and stopped before it
                # kept a link (killed, or its lease lost): their deletions since
                # are in no delta, and the read for a new link lists none. A scan
                # finds them, as after a link that expired.
                self._scan_due.add(table)
        else:
            state.tracking = False
            self._tracked[table] = False
        return state

    @property
    def _lookback(self) -> timedelta:
        return timedelta(seconds=self.settings.sync.lookback_s)

    @property
    def _rereads(self) -> timedelta:
        """How far behind the watermark a poll may read again: the versions
        published in there are remembered, or every poll publishes them again."""
        sync = self.settings.sync
        return timedelta(seconds=max(sync.lookback_s, sync.poll_overlap_s))

    async def _store_checkpoint(self, table: str, watermark: datetime) -> None:
        self.lease.check()
        await self.checkpoints.store_watermark(self.side, table, watermark)

    async def _store_delta_link(self, table: str, link: str | None) -> None:
        self.lease.check()
        await self.checkpoints.store_delta_link(self.side, table, link)

    async def _poll_once(self, table: str, state: _TableState) -> None:
        if state.tracking is not False:
            try:
                await self._follow_changes(table, state)
                return
            except ChangeTrackingUnavailable as exc:
                await self._untracked(table, state, exc)
            except DeltaLinkExpired as exc:
                log.warning(
                    "delta_link_expired",
                    side=self.side,
                    table=table,
                    watermark=state.watermark.isoformat(),
                    error=str(exc),
                )
                metrics.delta_link_expired(self.side, table)
                # The deletions in between are in no delta any more: a scan finds them.
                self._scan_due.add(table)
                state.delta_link = None
                state.resume_from = state.watermark - self._lookback
                await self._store_delta_link(table, None)
                await self._follow_changes(table, state)
                return
        await self._poll_stamps(table, state)
        await self._reconcile(table, state)

    async def _untracked(
        self, table: str, state: _TableState, exc: ChangeTrackingUnavailable
    ) -> None:
        """The table has no change tracking: polled by stamp from the watermark on."""
        log.info("change_tracking_unavailable", side=self.side, table=table, reason=str(exc))
        state.tracking = False
        self._tracked[table] = False
        if state.delta_link is not None:
            state.delta_link = None
            await self._store_delta_link(table, None)
            self._scan_due.add(table)

    async def _follow_changes(self, table: str, state: _TableState) -> None:
        """One read of the table's changes: from its delta link, or (without one) a read
        of every row for a new link, publishing those stamped from ``resume_from``."""
        link = state.delta_link
        newest = state.watermark
        next_link: str | None = None
        published = deleted = echoes = 0
        async for page in self.api.track_changes(table, link):
            if state.tracking is None:
                state.tracking = self._tracked[table] = True
                log.info("change_tracking_followed", side=self.side, table=table)
            rows = page.rows
            if link is None:
                since = state.resume_from
                rows = [r for r in rows if since is not None and r.modified_at >= since]
            fresh = unpublished(rows, state.recent)
            if fresh:
                kept, skipped = await self._without_echoes(table, fresh)
                if kept:
                    await self._publish_rows(table, kept, job_id=None)
                state.recent = remember(state.recent, fresh)
                published += len(kept)
                echoes += skipped
            for row in page.rows:
                newest = max(newest, row.modified_at)
            if page.deleted and link is not None:
                deleted += await self._publish_tracked_deletions(table, page.deleted)
            if page.delta_link is not None:
                next_link = page.delta_link
        moved = next_link is not None and next_link != link
        if newest > state.watermark or moved:
            faults.point("capture.before_checkpoint", table)
        if newest > state.watermark:
            await self._store_checkpoint(table, newest)
            state.watermark = newest
        if moved:
            await self._store_delta_link(table, next_link)
            state.delta_link = next_link
        state.resume_from = None
        state.recent = forget_before(state.recent, state.watermark - self._rereads)
        if published or deleted or echoes:
            log.info(
                "changes_captured",
                side=self.side,
                table=table,
                rows=published,
                deleted=deleted,
                echoes=echoes,
                tracked=True,
                watermark=state.watermark.isoformat(),
            )

    async def _publish_tracked_deletions(self, table: str, ids: Sequence[str]) -> int:
        """Every deletion change tracking reports. Not only of the records coupled now: a
        record created a moment ago may be on its way to its coupling (its create waits
        on its partition, where this deletion comes after it); apply ignores the deletion
        of a record it never coupled."""
        now = self.clock.now()
        gone = sorted({rid for rid in ids if (table, rid) not in self._tombstones})
        if gone:
            await self._publish_deletions(table, gone, job_id=None)
            for rid in gone:
                self._tombstones[(table, rid)] = now
        return len(gone)

    async def _poll_stamps(self, table: str, state: _TableState) -> None:
        """Rows stamped since the watermark less the overlap, or less the whole look-back
        every ``lookback_interval_s``; versions published already are skipped. Each page
        (in stamp order) is published, then checkpointed, before the next is read."""
        sync = self.settings.sync
        overlap = timedelta(seconds=sync.poll_overlap_s)
        now = self.clock.monotonic()
        wide = state.last_lookback is None or now - state.last_lookback >= sync.lookback_interval_s
        since = state.watermark - (self._lookback if wide else overlap)
        if state.floor is not None:
            since = max(since, state.floor)
        passed = state.watermark - overlap
        first_poll = state.polls == 0
        captured = late = echoes = 0
        async for page in self.api.changed_since(table, since):
            fresh = unpublished(page, state.recent)
            if fresh:
                kept, skipped = await self._without_echoes(table, fresh)
                if kept:
                    await self._publish_rows(table, kept, job_id=None)
                # Echoes too: read, and not to be considered again on every poll.
                state.recent = remember(state.recent, fresh)
                captured += len(kept)
                echoes += skipped
                if not first_poll:
                    late += sum(1 for r in kept if r.modified_at < passed)
            if state.known is not None:
                state.known.update((r.id, version_of(r)) for r in page)
            newest = max((row.modified_at for row in page), default=state.watermark)
            if newest > state.watermark:
                faults.point("capture.before_checkpoint", table)
                await self._store_checkpoint(table, newest)
                state.watermark = newest
        if wide:
            state.last_lookback = now
        state.polls += 1
        state.recent = forget_before(state.recent, state.watermark - self._rereads)
        if captured or echoes:
            metrics.late_rows(self.side, table, late)
            log.info(
                "changes_captured",
                side=self.side,
                table=table,
                rows=captured,
                late=late,
                echoes=echoes,
                watermark=state.watermark.isoformat(),
            )

    async def _reconcile(self, table: str, state: _TableState) -> None:
        """Every ``reconcile_interval_s``: every row's version against the ones capture
        read; a row stamped before the look-back with a version it never read committed
        too late for the polls, and is published now. The first pass only takes note."""
        interval = self.settings.sync.reconcile_interval_s
        now = self.clock.monotonic()
        if interval <= 0 or (
            state.last_reconcile is not None and now - state.last_reconcile < interval
        ):
            return
        versions: list[Row] = []
        async for page in self.api.read_versions(table):
            versions.extend(page)
        horizon = state.watermark - self._lookback
        found = [] if state.known is None else missed(versions, state.known, horizon)
        known = {r.id: version_of(r) for r in versions}
        published = echoes = 0
        if found:
            rows = await self.api.get_many(table, found)
            fresh = unpublished(rows.values(), state.recent)
            if fresh:
                kept, echoes = await self._without_echoes(table, fresh)
                if kept:
                    await self._publish_rows(table, kept, job_id=None)
                state.recent = remember(state.recent, fresh)
                known.update((r.id, version_of(r)) for r in fresh)
                published = len(kept)
        state.known = known
        state.last_reconcile = now
        if published:
            metrics.late_rows(self.side, table, published)
            log.warning(
                "reconcile_published",
                side=self.side,
                table=table,
                rows=published,
                echoes=echoes,
                horizon=horizon.isoformat(),
            )

    async def _without_echoes(self, table: str, rows: Sequence[Row]) -> tuple[list[Row], int]:
        """``rows`` less the echoes of apply's own writes, and how many those were: the
        rows whose version every mapping reading ``table`` records on the row's coupling
        already, or a later one (one query per mapping, for the rows still in question)."""
        if not rows or not self.settings.sync.capture_skips_echoes:
            return list(rows), 0
        # Apply refuses an id that is no GUID as invalid: published, it is dead-lettered.
        echoed = [r for r in rows if _is_guid(r.id)]
        readers = await self._readers(table) if echoed else ()
        if not readers:
            return list(rows), 0
        for name in readers:
            if not echoed:
                break
            ids = sorted({r.id for r in echoed})
            coupled = await self.couplings.by_ids(name, self.side, ids)
            stamps = {rid: c.stamp_on(self.side) for rid, c in coupled.items()}
            echoed = synced_already(self.side, echoed, stamps)
        if not echoed:
            return list(rows), 0
        skipped = {(r.id, version_of(r)) for r in echoed}
        kept = [r for r in rows if (r.id, version_of(r)) not in skipped]
        count = len(rows) - len(kept)
        metrics.echoes_skipped(self.side, table, count)
        self.echoes += count
        return kept, count

    async def _readers(self, table: str) -> tuple[str, ...]:
        """The mappings reading ``table`` now: a mapping loaded since capture started
        may need a row the others have synced already. Read when first needed, so
        that with ``capture_skips_echoes`` off capture asks nothing more than before."""
        version = await self.mapping_store.version()
        if self._mappings is None or version != self._mappings_version:
            self._mappings = await self.mapping_store.load()
            self._mappings_version = version
        return tuple(m.name for m in self._mappings.reading(self.side, table))

    async def _publish_rows(
        self, table: str, rows: Sequence[Row], job_id: str | None
    ) -> list[tuple[int, int]]:
        """Publishes an event per row; a row whose event the log refuses as too
        large goes to the dead-letter topic instead (id, size and limit) and
        the others are published: one such row never stops its table."""
        topic = self.topics.cdc(self.side, table)
        now = self.clock.now()
        pending = [
            Message(
                topic,
                row.id.encode(),
                self.codec.encode(
                    RecordChanged(
                        side=self.side,
                        table=table,
                        record_id=row.id,
                        op="upsert",
                        modified_at=row.modified_at,
                        captured_at=now,
                        fields=row.fields,
                        etag=row.etag,
                        modified_by=row.modified_by,
                        snapshot_job_id=job_id,
                    )
                ),
            )
            for row in rows
        ]
        while True:
            try:
                acks = await self.publisher.publish_many(pending)
                break
            except MessageTooLarge as refused:
                # Nothing of the call was appended: the rest goes again without it.
                at = next(i for i, m in enumerate(pending) if m.key == refused.key)
                await self.deadletters.send_oversized(
                    refused, (pending.pop(at).key or b"").decode()
                )
        self.published += len(acks)
        return acks

    # Snapshots for jobs

    async def _snapshot_loop(self, stop: asyncio.Event) -> None:
        """One request at a time, committed once it is served: a restart
        serves the one it was on again, and a job's snapshot is published
        only once (``begin_snapshot``)."""
        self._snapshot_beat = self._loop(f"capture {self.side} snapshots")
        loop = ConsumeLoop(
            self.consumers,
            Subscription(
                f"{self.topics.prefix}tablesync.capture.{self.side}",
                (self.topics.snapshots,),
                client_id=f"tablesync-capture-{self.side}",
                max_records=1,
                wait_ms=500,
            ),
            self._serve_batch,
            what=f"capture {self.side} snapshot request",
            clock=self.clock,
            backoff_s=(2.0,),
            heartbeat=self._snapshot_beat,
        )
        await loop.run(stop)

    async def _serve_batch(self, batch: Batch) -> dict[TopicPartition, int]:
        for records in batch.values():
            for record in records:
                await self._serve(record.value or b"")
        return next_offsets(batch)

    async def _serve(self, value: bytes) -> None:
        try:
            request = self.codec.decode(value)
        except DecodeError as exc:
            log.warning("snapshot_request_undecodable", side=self.side, reason=str(exc))
            return
        if not isinstance(request, SnapshotRequested) or request.side != self.side:
            return
        done = await self.checkpoints.begin_snapshot(request.job_id, self.side, request.table)
        if done:
            return
        started = self.clock.monotonic()
        topic = self.topics.cdc(self.side, request.table)
        partitions = await self.publisher.partitions_for(topic)
        per_partition = dict.fromkeys(partitions, 0)
        total = 0
        async for rows, deleted in read_ahead(self._snapshot_rows(request)):
            # A large table's snapshot takes a while; each page is a round.
            self._snapshot_beat()
            acks = await self._publish_rows(request.table, rows, request.job_id)
            acks += await self._publish_deletions(request.table, deleted, request.job_id)
            for partition, _ in acks:
                per_partition[partition] = per_partition.get(partition, 0) + 1
            total += len(acks)
        now = self.clock.now()
        await self.publisher.publish_many(
            Message(
                topic,
                None,
                self.codec.encode(
                    SnapshotEnd(self.side, request.table, request.job_id, p, count, now)
                ),
                partition=p,
            )
            for p, count in sorted(per_partition.items())
        )
        await self.checkpoints.finish_snapshot(request.job_id, total)
        log.info(
            "snapshot_published",
            side=self.side,
            table=request.table,
            job_id=request.job_id,
            kind=request.kind,
            records=total,
            ms=round((self.clock.monotonic() - started) * 1000),
        )

    async def _snapshot_rows(
        self, request: SnapshotRequested
    ) -> AsyncIterator[tuple[list[Row], list[str]]]:
        expr = filters.parse(request.filter) if request.filter else None
        if request.kind == "records":
            ids = list(request.record_ids)
            found = await self.api.get_many(request.table, ids)
            yield list(found.values()), [i for i in ids if i.lower() not in found]
            return
        pages = (
            self.api.changed_since(request.table, request.since, filter=expr)
            if request.kind == "modified" and request.since is not None
            else self.api.read_all(request.table, filter=expr)
        )
        async for page in pages:
            yield page, []

    async def _publish_deletions(
        self, table: str, ids: Sequence[str], job_id: str | None
    ) -> list[tuple[int, int]]:
        if not ids:
            return []
        topic = self.topics.cdc(self.side, table)
        now = self.clock.now()
        messages = [
            Message(
                topic,
                rid.encode(),
                self.codec.encode(
                    RecordChanged(
                        side=self.side,
                        table=table,
                        record_id=rid,
                        op="delete",
                        modified_at=now,
                        captured_at=now,
                        snapshot_job_id=job_id,
                    )
                ),
            )
            for rid in ids
        ]
        acks = await self.publisher.publish_many(messages)
        self.published += len(messages)
        return acks

    # Deletions

    async def _deletion_loop(self, tables: Sequence[str], stop: asyncio.Event) -> None:
        sync = self.settings.sync
        interval = sync.delete_scan_interval_s
        tracked_every = sync.tracked_delete_scan_interval_s
        name = f"capture {self.side} deletions"
        beat = self._loop(name, every_s=interval)
        beat()
        scanned: dict[str, float] = {}
        pause = interval
        while not await sleep_or_stop(stop, pause):
            beat()
            now = self.clock.monotonic()
            self._scan_requests = 0
            for table in tables:
                # Change tracking reports deletions itself, but not those of a
                # record deleted before the first read that took a delta link
                # (a read that published it failed before storing its link, a
                # link that expired): a scan, seldom, finds what it left.
                if (
                    self._tracked.get(table)
                    and table not in self._scan_due
                    and now - scanned.setdefault(table, now) < tracked_every
                ):
                    continue
                scanned[table] = now
                await self._guarded(f"deletions {table}", stop, lambda t=table: self._scan(t))
            spaced = scan_pause(self._scan_requests, interval, sync.delete_scan_requests_per_min)
            if spaced != pause:
                if spaced > interval:
                    log.info(
                        "deletion_scans_spaced",
                        side=self.side,
                        requests=self._scan_requests,
                        every_s=round(spaced, 1),
                    )
                pause = spaced
                # A longer pause is not a stalled loop.
                beat = self._loop(name, every_s=pause)

    async def _scan(self, table: str) -> None:
        """Publishes a deletion for each coupled record of ``table`` that no longer exists:
        missing from a listing of every id and from a direct read of it, unless the scan
        would remove more than its share of a mapping's couplings."""
        mappings = await self.mapping_store.load()
        scan_start = self.clock.now()
        coupled: dict[str, set[str]] = {}
        for m in mappings.reading(self.side, table):
            coupled[m.name] = await self.couplings.all_ids(
                m.name, self.side, coupled_before=scan_start
            )
        every = set().union(*coupled.values())
        if not every:
            self._scan_due.discard(table)
            return
        present: set[str] = set()
        async for ids in self.api.read_ids(table):
            self._scan_requests += 1
            present.update(ids)
        horizon = scan_start - _TOMBSTONE_MEMORY
        self._tombstones = {k: v for k, v in self._tombstones.items() if v > horizon}
        published = {rid for t, rid in self._tombstones if t == table}
        candidates = vanished(every, present, published)
        sync = self.settings.sync
        halts = overreach(coupled, candidates, sync.delete_scan_max_share, sync.delete_scan_min_cap)
        if halts:
            for halt in halts:
                log.error(
                    "deletion_scan_halted",
                    side=self.side,
                    table=table,
                    mapping=halt.mapping,
                    vanished=halt.vanished,
                    coupled=halt.coupled,
                    listed=len(present),
                    max_share=sync.delete_scan_max_share,
                )
                metrics.deletion_scan_halted(self.side, table, halt.mapping)
            return
        found = await self.api.get_many(table, sorted(candidates)) if candidates else {}
        self._scan_requests += 1 if candidates else 0
        gone = confirmed(candidates, found)
        if found:
            log.warning(
                "deletion_scan_unconfirmed",
                side=self.side,
                table=table,
                records=len(found),
                listed=len(present),
            )
        if gone:
            await self._publish_deletions(table, gone, job_id=None)
            for rid in gone:
                self._tombstones[(table, rid)] = scan_start
            log.info("deletions_captured", side=self.side, table=table, records=len(gone))
        self._scan_due.discard(table)


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
