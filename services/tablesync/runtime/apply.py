"""The apply service of one mapping: consume both sides' change topics, apply,
commit.

Per batch (a ``ConsumeLoop`` round): decode (poison events go to the
dead-letter topic), apply through the ``Applier``, commit the state database
(couplings, counters, positions), publish outcomes; the loop then commits the
Kafka offsets. On assignment each partition resumes from the position stored
with the effects, so a batch replayed after a crash is skipped rather than
applied twice. Transient failures retry the same batch without committing
anything. Between batches, once a second, records due for a retry and
intents left by a dead attempt are applied."""

from __future__ import annotations

import asyncio
import re
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from tablesync import metrics
from tablesync.adapters.avro import Codec
from tablesync.adapters.transient import TRANSIENT
from tablesync.core.effects import BatchEffects
from tablesync.core.events import Direction, JobFinished, RecordChanged, Side, SnapshotEnd
from tablesync.core.mappings import MappingSet, direction_of
from tablesync.core.plan import JobContext
from tablesync.core.topics import Topics
from tablesync.errors import ClaimLost, DecodeError, InvalidEvent
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaim, PairClaims
from tablesync.ports.clock import Clock
from tablesync.ports.log import ConsumerFactory, ConsumerRecord, Message, Publisher, TopicPartition
from tablesync.ports.state import StateStores
from tablesync.runtime import faults
from tablesync.runtime.applier import RETRY_TOPIC, Applier, Item, JobEnsurer
from tablesync.runtime.claiming import claim_items
from tablesync.runtime.consume import Batch, ConsumeLoop, Subscription
from tablesync.runtime.deadletter import DeadLetters
from tablesync.runtime.health import Loops, unwatched
from tablesync.runtime.stopping import until_done
from tablesync.settings import Settings

__all__ = ["ApplyService"]

log = structlog.get_logger()

_CONTINUOUS = JobContext(job_id=None, kind="continuous")
_RETRY_EVERY_S = 1.0
# A partition's events of one batch are applied in lanes of at least this many,
# side by side: one lane's waits on a side overlap another's work.
_LANE_LEAST = 200
_LANES_MOST = 4
_CANONICAL_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True, slots=True)
class _Marker:
    end: SnapshotEnd
    topic: str
    partition: int
    job_direction: Direction


class ApplyService:
    def __init__(
        self,
        settings: Settings,
        mapping_name: str,
        *,
        stores: StateStores,
        apis: dict[Side, SideApi],
        publisher: Publisher,
        consumers: ConsumerFactory,
        codec: Codec,
        clock: Clock,
        topics: Topics,
        claims: PairClaims,
        instance: str | None = None,
        loops: Loops = unwatched,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.mapping_name = mapping_name
        self._loops = loops
        self.stores = stores
        self.apis = apis
        self.publisher = publisher
        self.consumers = consumers
        self.codec = codec
        self.clock = clock
        self.topics = topics
        self.instance = instance or uuid.uuid4().hex[:8]
        self._new_id = new_id
        self.group_id = f"{topics.prefix}tablesync.apply.{mapping_name}"
        self.mapping_store = stores.mappings
        self.jobs = stores.jobs
        self.state = stores.apply_state
        self.claims = claims
        self.deadletters = DeadLetters(publisher, topics.deadletter, self.group_id)
        self._job_cache: dict[str, JobContext | None] = {}
        self._job_mapping: dict[str, str] = {}
        self._consuming_since = clock.monotonic()
        # Next offset per partition whose effects this process committed.
        self._applied: dict[TopicPartition, int] = {}
        # The epoch each partition was taken under on assignment: this
        # instance's writes and commits for it hold while no other took it since.
        self._epochs: dict[TopicPartition, int] = {}
        self._applier: Applier | None = None
        # Set while the consume loop's revoke waits for the batch in flight.
        self._revoking: asyncio.Event | None = None
        self._mappings_version: object = None
        self.batches = 0

    async def run(self, stop: asyncio.Event) -> None:
        loaded: list[MappingSet] = []

        async def load() -> None:
            loaded[:] = [await self.mapping_store.load()]
            self._mappings_version = await self.mapping_store.version()

        # The database can go away between the start-up checks and this read
        # (a restart): waited for like any step, not a reason to exit.
        if not await until_done(
            stop, load, what=f"apply {self.mapping_name} start", transient=TRANSIENT
        ):
            await self.claims.close()
            return
        mappings = loaded[0]
        mapping = mappings.get(self.mapping_name)
        self._applier = Applier(
            self.mapping_name,
            mappings,
            self.apis,
            self.stores.couplings,
            self.state,
            JobEnsurer(self.mapping_name, self._create_continuous_job),
            self.settings.sync,
            self.clock,
            new_id=self._new_id,
        )
        source_topics = (
            self.topics.cdc("bc", mapping.bc_table),
            self.topics.cdc("dataverse", mapping.dataverse_table),
        )
        loop = ConsumeLoop(
            self.consumers,
            Subscription(
                self.group_id,
                source_topics,
                client_id=f"tablesync-apply-{self.mapping_name}-{self.instance}",
                max_records=self.settings.sync.apply_batch_size,
                wait_ms=self.settings.sync.apply_batch_wait_ms * 4,
            ),
            self._process,
            what=f"apply {self.mapping_name}",
            clock=self.clock,
            resume=self._resume,
            idle=(("retries", self._retry_due), ("intents", self._settle_intents)),
            idle_every_s=_RETRY_EVERY_S,
            heartbeat=self._loops(f"apply {self.mapping_name}"),
        )
        self._revoking = loop.revoking
        self._consuming_since = self.clock.monotonic()
        log.info("apply_started", mapping=self.mapping_name, topics=list(source_topics))
        try:
            await loop.run(stop)
        finally:
            await self.claims.close()
            log.info("apply_stopped", mapping=self.mapping_name, batches=self.batches)

    async def _resume(self, assigned: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each assigned partition resumes: the position stored with its
        effects, or further where this process committed more."""
        for tp in assigned:
            # Given again: what was held before may have been taken by another
            # since; if this take fails, the first batch takes them.
            self._epochs.pop(tp, None)
        self._hold(
            await self.state.take_epochs(
                self.mapping_name, sorted((tp.topic, tp.partition) for tp in assigned)
            )
        )
        positions = await self.state.positions(self.mapping_name, [tp.topic for tp in assigned])
        resumed: dict[TopicPartition, int] = {}
        for tp in assigned:
            stored = positions.get((tp.topic, tp.partition))
            # A rebalance can run beside a batch of this process, before its
            # commit: never go back behind what this process has committed.
            applied = self._applied.get(tp)
            if applied is not None and (stored is None or applied > stored):
                stored = applied
            if stored is not None:
                resumed[tp] = stored
        log.info(
            "partitions_assigned",
            mapping=self.mapping_name,
            partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned),
        )
        return resumed

    def _hold(self, taken: Mapping[tuple[str, int], int]) -> None:
        """Keeps the epochs this instance took. Two takes of one partition can
        overlap (the assignment's, and a batch read before it answered), and
        their answers come back in either order: the later take, the higher
        epoch, is the one held, or every batch of that partition is fenced off
        by this instance's own take."""
        for (topic, partition), epoch in taken.items():
            tp = TopicPartition(topic, partition)
            self._epochs[tp] = max(epoch, self._epochs.get(tp, epoch))

    async def _reload_mappings(self) -> None:
        version = await self.mapping_store.version()
        if version != self._mappings_version and self._applier is not None:
            self._applier.reload(await self.mapping_store.load())
            self._mappings_version = version
            log.info("mappings_reloaded", mapping=self.mapping_name)

    async def _create_continuous_job(
        self, job_id: str, mapping: str, direction: str, start: Any
    ) -> None:
        await self.jobs.continuous_job(job_id, mapping, direction, start)

    # One batch

    async def _process(self, batch: Batch) -> Mapping[TopicPartition, int]:
        """Applies a batch and makes its effects durable; returns the offsets
        the loop commits next. Safe to repeat: records below the stored
        positions are skipped."""
        assert self._applier is not None
        started = self.clock.monotonic()
        # An operator's change of the mapping applies from the next batch on.
        await self._reload_mappings()
        # Assigned while taking them failed, or read before the assignment's own
        # take answered (which may let go of what it takes again meanwhile):
        # taken now, before any write.
        while unheld := sorted((tp.topic, tp.partition) for tp in batch if tp not in self._epochs):
            self._hold(await self.state.take_epochs(self.mapping_name, unheld))
        effects = BatchEffects(self.mapping_name)
        effects.epochs = {(tp.topic, tp.partition): self._epochs[tp] for tp in batch}
        items: list[Item] = []
        markers: list[_Marker] = []
        positions = await self.state.positions(self.mapping_name, list({tp.topic for tp in batch}))
        for tp, records in batch.items():
            stored = positions.get((tp.topic, tp.partition), 0)
            applied = self._applied.get(tp, 0)
            if applied > stored:
                log.warning(
                    "position_behind_applied",
                    mapping=self.mapping_name,
                    topic=tp.topic,
                    partition=tp.partition,
                    stored=stored,
                    applied=applied,
                )
            stored = max(stored, applied)
            for record in records:
                if record.offset < stored:
                    continue  # applied before; its effects are committed
                await self._read(tp, record, items, markers)
            effects.positions[(tp.topic, tp.partition)] = max(
                stored, max(r.offset for r in records) + 1
            )
        self._applier.failures.clear()
        # A revoke gets its way over a wait for another instance's records:
        # their holder may be frozen, and only the rebalance moves its
        # partitions (and the records' next events) to an instance that runs.
        claim = await self._claim(items, give_way=self._revoking)
        try:
            await self._apply_by_partition(items, effects, claim)
            for m in markers:
                effects.finished.append((m.end.job_id, m.topic, m.partition))
            faults.point("apply.before_commit", self.mapping_name)
            await self.state.commit(effects, claim=claim.proof() if claim else None)
        finally:
            if claim is not None:
                await claim.release()
        for (t, p), off in effects.positions.items():
            tp = TopicPartition(t, p)
            self._applied[tp] = max(off, self._applied.get(tp, 0))
        metrics.events_applied(self.mapping_name, [i.event for i in items], self.clock.now())
        faults.point("apply.after_commit", self.mapping_name)
        await self._publish_outcomes(markers)
        self.batches += 1
        log.info(
            "batch_applied",
            mapping=self.mapping_name,
            events=len(items),
            markers=len(markers),
            partitions=len(batch),
            counts=_summary(effects),
            ms=round((self.clock.monotonic() - started) * 1000),
        )
        return {TopicPartition(t, p): off for (t, p), off in effects.positions.items()}

    async def _apply_by_partition(
        self, items: list[Item], effects: BatchEffects, claim: PairClaim | None
    ) -> None:
        """Applies each partition's events beside the others': their waits on
        the sides and the database overlap. A partition with many events in the
        batch is applied as lanes by record, side by side too: a record's events
        stay in one lane, in order, as a finer partitioning by key would have
        them (the pairs the lanes share are held as across partitions)."""
        assert self._applier is not None
        by_partition: dict[tuple[str, int], list[Item]] = {}
        for item in items:
            by_partition.setdefault((item.topic, item.partition), []).append(item)
        groups = [lane for group in by_partition.values() for lane in _lanes(group)]
        await self._applier.apply_side_by_side(groups, effects, claim)

    async def _claim(
        self, items: Sequence[Item], *, give_way: asyncio.Event | None = None
    ) -> PairClaim | None:
        assert self._applier is not None
        return await claim_items(
            self._applier,
            self.claims,
            items,
            wait_s=self.settings.sync.claim_wait_s,
            give_way=give_way,
        )

    async def _read(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        items: list[Item],
        markers: list[_Marker],
    ) -> None:
        value = record.value or b""
        try:
            event = self.codec.decode(value)
            if isinstance(event, SnapshotEnd):
                marker = await self._marker(tp, event)
                if marker is not None:
                    markers.append(marker)
                return
            if not isinstance(event, RecordChanged):
                raise DecodeError(f"{type(event).__name__} does not belong on a change topic")
            _validate(event, tp.topic, self.topics)
            job = await self._job_context(event)
            if job is None:
                return
            items.append(Item(event, value, job, tp.topic, tp.partition, record.offset))
        except (DecodeError, InvalidEvent) as exc:
            reason = exc.reason if isinstance(exc, InvalidEvent) else str(exc)
            await self.deadletters.send(
                InvalidEvent(tp.topic, tp.partition, record.offset, reason), record
            )

    async def _marker(self, tp: TopicPartition, end: SnapshotEnd) -> _Marker | None:
        mapping = await self._job_owner(end.job_id)
        if mapping != self.mapping_name:
            return None
        params = await self.jobs.job_params(end.job_id)
        direction: Direction = params.direction if params else direction_of(end.side)
        return _Marker(end, tp.topic, tp.partition, direction)

    async def _job_owner(self, job_id: str) -> str | None:
        if job_id not in self._job_mapping:
            params = await self.jobs.job_params(job_id)
            if params is None:
                return None
            self._job_mapping[job_id] = params.mapping
        return self._job_mapping[job_id]

    async def _job_context(self, event: RecordChanged) -> JobContext | None:
        """The job of an event; None when the event is another mapping's snapshot."""
        job_id = event.snapshot_job_id
        if job_id is None:
            return _CONTINUOUS
        if job_id not in self._job_cache:
            params = await self.jobs.job_params(job_id)
            if params is None:
                # A snapshot of a job this database never saw: a plain change.
                self._job_cache[job_id] = _CONTINUOUS
            elif params.mapping != self.mapping_name:
                self._job_cache[job_id] = None
            else:
                self._job_cache[job_id] = JobContext(
                    job_id=job_id,
                    kind=params.kind,
                    ignore_only_coupled=params.ignore_only_coupled,
                    direction=params.direction,
                    unconditional=params.unconditional,
                    coupling_run=params.kind == "coupling",
                    create_unmatched=params.create_unmatched,
                    sync_after=params.sync_after,
                )
        return self._job_cache[job_id]

    async def _retry_context(self, event: RecordChanged) -> JobContext:
        """A retry counts in the continuous job, under the rules of the job that
        first met the record: a create a full sync allowed stays allowed."""
        origin = await self._job_context(event)
        cleared = origin is not None and origin.ignore_only_coupled
        # A record an unconditional job failed on is compared again when
        # retried, though its version is still the one last synced.
        unconditional = origin is not None and origin.unconditional
        if origin is not None and origin.coupling_run:
            # An ambiguous match, retried: matched again, never created unless asked.
            return replace(origin, job_id=None, kind="retry")
        return JobContext(
            job_id=None, kind="retry", ignore_only_coupled=cleared, unconditional=unconditional
        )

    async def _publish_outcomes(self, markers: Sequence[_Marker]) -> None:
        assert self._applier is not None
        messages = [
            Message(self.topics.outcomes, (f.job_id or "").encode(), self.codec.encode(f))
            for f in self._applier.failures
        ]
        for m in markers:
            totals = await self.jobs.partition_counts(m.end.job_id, m.topic, m.partition)
            partitions = len(await self.publisher.partitions_for(m.topic))
            finished = JobFinished(
                job_id=m.end.job_id,
                mapping=self.mapping_name,
                direction=m.job_direction,
                topic=m.topic,
                partition=m.partition,
                partitions=partitions,
                finished_at=self.clock.now(),
                inserted=totals.get("inserted", 0),
                modified=totals.get("modified", 0),
                deleted=totals.get("deleted", 0),
                unchanged=totals.get("unchanged", 0),
                skipped=totals.get("skipped", 0),
                failed=totals.get("failed", 0),
                pending=totals.get("pending", 0),
                coupled=totals.get("coupled", 0),
                uncoupled=totals.get("uncoupled", 0),
            )
            messages.append(
                Message(self.topics.outcomes, m.end.job_id.encode(), self.codec.encode(finished))
            )
        if messages:
            await self.publisher.publish_many(messages)

    # Retries of records that did not sync

    async def _retry_due(self) -> None:
        assert self._applier is not None
        due = await self.state.claim_due(
            self.mapping_name,
            limit=self.settings.sync.apply_batch_size,
            lease_s=max(30.0, self.settings.sync.retry_backoff_s),
        )
        if not due:
            return
        await self._reload_mappings()
        items: list[Item] = []
        for d in due:
            try:
                event = self.codec.decode(d.event)
            except DecodeError:
                continue
            if isinstance(event, RecordChanged):
                items.append(
                    Item(event, d.event, await self._retry_context(event), RETRY_TOPIC, 0, None, d)
                )
        effects = await self._apply_aside(items)
        log.info(
            "retries_applied",
            mapping=self.mapping_name,
            records=len(items),
            counts=_summary(effects),
        )

    async def _apply_aside(self, items: list[Item]) -> BatchEffects:
        """Applies items that come from the state database rather than a
        topic: their effects commit alone, with no position to move."""
        assert self._applier is not None
        effects = BatchEffects(self.mapping_name)
        self._applier.failures.clear()
        claim = await self._claim(items)
        try:
            await self._applier.apply(items, effects, claim)
            await self.state.commit(effects, claim=claim.proof() if claim else None)
        except ClaimLost:
            # Another instance may have decided these records since: nothing
            # is committed, and they stay listed (or their intents open), to
            # be taken again once the lease this attempt took on them ends.
            log.warning("aside_dropped", mapping=self.mapping_name, records=len(items))
            return BatchEffects(self.mapping_name)
        finally:
            if claim is not None:
                await claim.release()
        await self._publish_outcomes([])
        return effects

    async def _settle_intents(self) -> None:
        """Creates announced by an attempt that died and never replayed (its
        source deleted since, or its event applied by another path): each is
        settled from its source as it is now, so its intent holds nothing back."""
        assert self._applier is not None
        if self.clock.monotonic() - self._consuming_since < self.settings.sync.intent_timeout_s:
            # Replaying what the last process left comes first: a source event
            # replayed settles its intent the ordinary way.
            return
        stale = await self.state.claim_stale_intents(
            self.mapping_name,
            older_than_s=self.settings.sync.intent_timeout_s,
            limit=self.settings.sync.apply_batch_size,
        )
        if not stale:
            return
        await self._reload_mappings()
        events = await self._applier.sources_of(stale)
        # The intent shows the create was decided once: "only coupled" no longer holds it.
        job = JobContext(job_id=None, kind="retry", ignore_only_coupled=True)
        items = [Item(e, self.codec.encode(e), job, RETRY_TOPIC, 0) for e in events]
        effects = await self._apply_aside(items)
        log.info(
            "intents_settled",
            mapping=self.mapping_name,
            intents=len(stale),
            sources_gone=sum(e.op == "delete" for e in events),
            counts=_summary(effects),
        )


def _validate(event: RecordChanged, topic: str, topics: Topics) -> None:
    expected = topics.cdc(event.side, event.table)
    if expected != topic:
        raise InvalidEvent(topic, -1, -1, f"a {event.side}.{event.table} change on {topic}")
    if _CANONICAL_GUID.fullmatch(event.record_id) is None:
        # Other spellings uuid accepts (braces, no hyphens, a urn) are GUIDs too.
        try:
            uuid.UUID(event.record_id)
        except ValueError:
            raise InvalidEvent(
                topic, -1, -1, f"record id {event.record_id!r} is not a GUID"
            ) from None
    if event.modified_at.tzinfo is None:
        raise InvalidEvent(topic, -1, -1, "modified_at has no time zone")


def _lanes(group: list[Item]) -> list[list[Item]]:
    """A partition's events in lanes of about ``_LANE_LEAST`` or more, at most
    ``_LANES_MOST``; every event of a record in the same lane, in order."""
    count = min(_LANES_MOST, len(group) // _LANE_LEAST)
    if count <= 1:
        return [group]
    lanes: list[list[Item]] = [[] for _ in range(count)]
    for item in group:
        # zlib.crc32 rather than hash(): the same lanes in every process and run.
        key = f"{item.event.side}:{item.event.record_id.lower()}".encode()
        lanes[zlib.crc32(key) % count].append(item)
    return [lane for lane in lanes if lane]


def _summary(effects: BatchEffects) -> dict[str, int]:
    total: dict[str, int] = {}
    for counter in effects.counters.values():
        for k, v in counter.items():
            total[k] = total.get(k, 0) + v
    return total
