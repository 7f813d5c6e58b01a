"""The capture service of one side: changes, snapshots and deletions to Kafka.

Three loops share one producer:

- per table, poll rows modified since the checkpoint (minus an overlap, so a
  row committed late with an earlier stamp is still seen), publish the ones
  not published already, and move the checkpoint only after the broker
  acknowledged every event;
- serve ``SnapshotRequested`` for this side: publish the rows a job needs,
  tagged with its id, then an end marker on every partition;
- every so often, compare the coupled records with the ids that still exist
  and publish a deletion for each coupled record that vanished.

One capture per side works at a time: it works while it holds the side's
lease (``runtime.lease``); a second process of the side waits as its standby."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from tablesync.adapters.avro import Codec
from tablesync.adapters.transient import TRANSIENT
from tablesync.core import filters
from tablesync.core.events import RecordChanged, Side, SnapshotEnd, SnapshotRequested
from tablesync.core.records import Row
from tablesync.core.topics import Topics
from tablesync.errors import DecodeError, MessageTooLarge, ReadRefused
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.ports.log import ConsumerFactory, Message, Publisher, TopicPartition
from tablesync.ports.state import Singleton, StateStores
from tablesync.runtime import faults
from tablesync.runtime.consume import Batch, ConsumeLoop, Subscription, next_offsets
from tablesync.runtime.deadletter import DeadLetters
from tablesync.runtime.lease import Lease, LeasedPublisher
from tablesync.runtime.refused import noted
from tablesync.runtime.stopping import sleep_or_stop
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
    # (id -> (etag or stamp, stamp)) of rows published within the overlap window.
    recent: dict[str, tuple[str, datetime]]


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
    ) -> None:
        self.settings = settings
        self.side = side
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
        self._tombstones: dict[tuple[str, str], datetime] = {}
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        await self.lease.serve(stop, self._work)

    async def _work(self, stop: asyncio.Event) -> None:
        mappings = await self.mapping_store.load()
        tables = mappings.tables(self.side)
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
        while not stop.is_set():
            started = self.clock.monotonic()

            async def step() -> None:
                nonlocal state
                if state is None:
                    state = _TableState(await self._checkpoint(table), {})
                await self._poll_once(table, state)

            await self._guarded(f"poll {table}", stop, step)
            await sleep_or_stop(stop, max(0.0, interval - (self.clock.monotonic() - started)))

    async def _checkpoint(self, table: str) -> datetime:
        stored = await self.checkpoints.watermark(self.side, table)
        if stored is not None:
            return stored
        # Capture covers what changes from now on; rows already there are the
        # business of a full synchronization.
        start = self.clock.now() - _START_SLACK
        await self._store_checkpoint(table, start)
        return start

    async def _store_checkpoint(self, table: str, watermark: datetime) -> None:
        self.lease.check()
        await self.checkpoints.store_watermark(self.side, table, watermark)

    async def _poll_once(self, table: str, state: _TableState) -> None:
        """Publishes and checkpoints page by page: a long backlog is never held
        in memory whole, and a failure keeps what the pages before it moved."""
        overlap = timedelta(seconds=self.settings.sync.poll_overlap_s)
        since = state.watermark - overlap
        captured = 0
        async for page in self.api.changed_since(table, since):
            fresh: list[Row] = []
            for row in page:
                token = row.etag or row.modified_at.isoformat()
                seen = state.recent.get(row.id)
                if seen is not None and seen[0] == token:
                    continue
                fresh.append(row)
            if not fresh:
                continue
            await self._publish_rows(table, fresh, job_id=None)
            captured += len(fresh)
            for row in fresh:
                state.recent[row.id] = (row.etag or row.modified_at.isoformat(), row.modified_at)
            newest = max(row.modified_at for row in fresh)
            if newest > state.watermark:
                faults.point("capture.before_checkpoint", table)
                await self._store_checkpoint(table, newest)
                state.watermark = newest
                floor = newest - overlap
                state.recent = {k: v for k, v in state.recent.items() if v[1] >= floor}
        if captured:
            log.info(
                "changes_captured",
                side=self.side,
                table=table,
                rows=captured,
                watermark=state.watermark.isoformat(),
            )

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
        interval = self.settings.sync.delete_scan_interval_s
        while not await sleep_or_stop(stop, interval):
            for table in tables:
                await self._guarded(f"deletions {table}", stop, lambda t=table: self._scan(t))

    async def _scan(self, table: str) -> None:
        """Publishes a deletion for each coupled record of ``table`` that no longer exists."""
        mappings = await self.mapping_store.load()
        scan_start = self.clock.now()
        coupled: set[str] = set()
        for m in mappings.reading(self.side, table):
            coupled |= await self.couplings.all_ids(m.name, self.side, coupled_before=scan_start)
        if not coupled:
            return
        present: set[str] = set()
        async for ids in self.api.read_ids(table):
            present.update(ids)
        horizon = scan_start - _TOMBSTONE_MEMORY
        self._tombstones = {k: v for k, v in self._tombstones.items() if v > horizon}
        gone = [rid for rid in sorted(coupled - present) if (table, rid) not in self._tombstones]
        if not gone:
            return
        await self._publish_deletions(table, gone, job_id=None)
        for rid in gone:
            self._tombstones[(table, rid)] = scan_start
        log.info("deletions_captured", side=self.side, table=table, records=len(gone))
