"""Replay a time window of captured changes through the apply rules.

After a mapping is fixed, the changes it got wrong are still on the retained
change topics. A replay reads the window from both sides' topics (offsets
found by timestamp), merges the two in time order, and applies every change
again under the mapping as it is now: a version applied before is applied
once more, an older one still never overwrites a newer, and values already
right are left alone — so a second replay of the same window changes nothing."""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import Topics
from tablesync.adapters.postgres.apply_state import ApplyStateStore, BatchEffects
from tablesync.adapters.postgres.couplings import CouplingStore
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.core.events import RecordChanged, Side
from tablesync.core.mappings import MappingSet, direction_of
from tablesync.core.plan import JobContext
from tablesync.errors import DecodeError
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tablesync.settings import SyncSettings

__all__ = ["ReplayResult", "replay"]

log = structlog.get_logger()

REPLAY_TOPIC = "(replay)"
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReplayResult:
    job_ids: dict[str, str]
    events: int
    counts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {"jobs": self.job_ids, "events": self.events, "counts": self.counts}


@dataclass(frozen=True, slots=True, order=True)
class _Captured:
    timestamp_ms: int
    topic: str
    partition: int
    offset: int
    value: bytes


async def replay(
    *,
    mapping: str,
    since: datetime,
    until: datetime | None,
    pool: Any,
    apis: dict[Side, SideApi],
    mappings: MappingSet,
    topics: Topics,
    bootstrap_servers: str,
    settings: SyncSettings,
    codec: Codec,
    clock: Clock,
) -> ReplayResult:
    m = mappings.get(mapping)
    sources = [topics.cdc("bc", m.bc_table), topics.cdc("dataverse", m.dataverse_table)]
    captured = await _read_window(bootstrap_servers, sources, since, until)
    jobs = JobStore(pool)
    job_ids: dict[str, str] = {}
    for direction in m.directions():
        job_id = str(uuid.uuid4())
        await jobs.create_job(
            job_id, run_id=None, mapping=mapping, direction=direction, kind="replay"
        )
        job_ids[direction] = job_id
    state = ApplyStateStore(pool)
    applier = Applier(
        mapping,
        mappings,
        apis,
        CouplingStore(pool),
        state,
        JobEnsurer(mapping, jobs.continuous_job),
        settings,
        clock,
    )
    origins: dict[str, tuple[str, bool] | None] = {}
    items: list[Item] = []
    for record in captured:
        try:
            event = codec.decode(record.value)
        except DecodeError:
            continue
        if not isinstance(event, RecordChanged) or direction_of(event.side) not in job_ids:
            continue
        cleared = False
        if event.snapshot_job_id is not None:
            origin = await _origin(jobs, origins, event.snapshot_job_id)
            if origin is not None and origin[0] != mapping:
                continue  # another mapping's snapshot of a shared table
            # A full sync's creates stay creates when its events are replayed.
            cleared = origin is not None and origin[1]
        direction = direction_of(event.side)
        context = JobContext(
            job_ids[direction],
            "replay",
            ignore_only_coupled=cleared,
            reapply=True,
            direction=direction,
        )
        items.append(Item(event, record.value, context, REPLAY_TOPIC, 0))
    for start in range(0, len(items), _CHUNK):
        effects = BatchEffects(mapping)
        await applier.apply(items[start : start + _CHUNK], effects)
        await state.commit(effects)
    counts: dict[str, int] = {}
    for job_id in job_ids.values():
        await jobs.finish_job(
            job_id,
            message=f"replay of {since.isoformat()} .. {until.isoformat() if until else 'now'}",
        )
        totals = await jobs.totals(job_id)
        if totals is not None:
            for k, v in totals.counts.items():
                counts[k] = counts.get(k, 0) + v
    log.info("replayed", mapping=mapping, events=len(items), counts=counts)
    return ReplayResult(job_ids, len(items), counts)


async def _origin(
    jobs: JobStore, cache: dict[str, tuple[str, bool] | None], job_id: str
) -> tuple[str, bool] | None:
    """The mapping of the job a snapshot event was read for, and whether that
    job cleared sync-only-coupled; None for a job this database never saw."""
    if job_id not in cache:
        params = await jobs.job_params(job_id)
        cache[job_id] = (params["mapping"], params["ignore_only_coupled"]) if params else None
    return cache[job_id]


async def _read_window(
    bootstrap_servers: str, sources: list[str], since: datetime, until: datetime | None
) -> list[_Captured]:
    """Every record of ``sources`` written in [since, until), in time order."""
    partitions = await _partitions(bootstrap_servers, sources)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        starts = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        ends = await consumer.end_offsets(partitions)
        if until is not None:
            stops = await consumer.offsets_for_times(
                {tp: int(until.timestamp() * 1000) for tp in partitions}
            )
            ends = {tp: (stops[tp].offset if stops[tp] is not None else ends[tp]) for tp in ends}
        per_partition: list[list[_Captured]] = []
        for tp in partitions:
            start = starts.get(tp)
            if start is None or start.offset >= ends[tp]:
                continue
            consumer.seek(tp, start.offset)
            per_partition.append(await _read_partition(consumer, tp, ends[tp]))
        return list(heapq.merge(*per_partition))
    finally:
        await consumer.stop()


async def _partitions(bootstrap_servers: str, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["error_code"] == 0
        for p in t["partitions"]
    )


async def _read_partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int
) -> list[_Captured]:
    found: list[_Captured] = []
    others = [p for p in consumer.assignment() if p != tp]
    consumer.pause(*others)
    try:
        while (await consumer.position(tp)) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                found.append(
                    _Captured(record.timestamp, tp.topic, tp.partition, record.offset, record.value)
                )
    finally:
        consumer.resume(*others)
    return found
