"""Consumer lag: how far each consumer group's committed offsets trail the end of
the partitions it reads, and how old the oldest event it has not processed is.

Lag is measured from the offsets committed in Kafka, which is what Kafka's own
tools and every operator read. (Apply also keeps its position in PostgreSQL and
commits to Kafka right after, so the two differ by at most one batch.)

The age of the oldest unprocessed event is the timestamp of the record at the
committed offset, fetched by a consumer of no group, so reading lag never joins,
rebalances or commits for anyone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tablesync.adapters.kafka.connection import KafkaConnection

__all__ = [
    "GroupSpec",
    "LagReader",
    "LagReport",
    "MappingLag",
    "PartitionLag",
    "position_and_lag",
]

OffsetReset = Literal["earliest", "latest"]

# Fetching one record per lagging partition is cheap; this bounds a read of a
# cluster where very many partitions lag at once.
_MAX_AGE_FETCHES = 256
_FETCH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A consumer group, the topics it reads, and where it starts without a commit."""

    group: str
    topics: tuple[str, ...]
    service: str
    mapping: str | None = None
    reset: OffsetReset = "earliest"


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    service: str
    mapping: str | None
    topic: str
    partition: int
    committed: int | None
    """The group's committed offset; None when it never committed on this partition."""
    end: int
    lag: int
    oldest_age_s: float | None
    """Age of the record at the committed offset when lag > 0, else None."""

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "service": self.service,
            "mapping": self.mapping,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "oldest_age_s": self.oldest_age_s,
        }


@dataclass(frozen=True, slots=True)
class MappingLag:
    """The lag of one mapping's apply group, over both sides' change topics."""

    mapping: str
    group: str
    lag: int
    oldest_age_s: float | None
    partitions: int

    def as_dict(self) -> dict[str, object]:
        return {
            "mapping": self.mapping,
            "group": self.group,
            "lag": self.lag,
            "oldest_age_s": self.oldest_age_s,
            "partitions": self.partitions,
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    read_at: datetime
    partitions: tuple[PartitionLag, ...]
    missing_topics: tuple[str, ...] = field(default=())
    """Topics a group reads that do not exist (yet): nothing to lag behind."""

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def mappings(self) -> list[MappingLag]:
        """Totals per mapping, in the order the partitions were listed."""
        grouped: dict[str, list[PartitionLag]] = {}
        for p in self.partitions:
            if p.mapping is not None:
                grouped.setdefault(p.mapping, []).append(p)
        return [
            MappingLag(
                mapping=name,
                group=parts[0].group,
                lag=sum(p.lag for p in parts),
                oldest_age_s=max(
                    (p.oldest_age_s for p in parts if p.oldest_age_s is not None), default=None
                ),
                partitions=len(parts),
            )
            for name, parts in grouped.items()
        ]

    def of_group(self, group: str) -> list[PartitionLag]:
        return [p for p in self.partitions if p.group == group]

    def as_dict(self) -> dict[str, object]:
        return {
            "read_at": self.read_at.isoformat(),
            "total": self.total,
            "mappings": [m.as_dict() for m in self.mappings()],
            "partitions": [p.as_dict() for p in self.partitions],
            "missing_topics": list(self.missing_topics),
        }


def position_and_lag(
    committed: int | None, start: int, end: int, reset: OffsetReset
) -> tuple[int, int]:
    """Where the group reads next on a partition, and how many messages remain.

    Without a commit the group starts where its reset policy says; a commit below
    the log start (records removed by retention) reads from the log start."""
    position = committed if committed is not None else (start if reset == "earliest" else end)
    position = max(position, start)
    return position, max(end - position, 0)


class LagReader:
    """Reads lag for a set of consumer groups; one read at a time.

    Connects on the first read and again after a failed one, so a broker that
    was away only fails the reads made while it was."""

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        client_id: str = "tablesync-lag",
        age_timeout_s: float = 2.0,
    ) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._age_timeout_s = age_timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> LagReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def read(self, groups: Sequence[GroupSpec]) -> LagReport:
        async with self._lock:
            try:
                return await self._read(groups)
            except BaseException:
                await self.close()
                raise

    async def message_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Messages each topic holds now (end minus log start, over its partitions);
        a topic that does not exist is left out."""
        async with self._lock:
            try:
                admin, consumer = await self._connect()
                partitions, _ = await _partitions(admin, list(topics))
                tps = [tp for parts in partitions.values() for tp in parts]
                if not tps:
                    return {}
                starts = await consumer.beginning_offsets(tps)
                ends = await consumer.end_offsets(tps)
            except BaseException:
                await self.close()
                raise
        counts: dict[str, int] = {}
        for tp in tps:
            counts[tp.topic] = counts.get(tp.topic, 0) + ends[tp] - starts[tp]
        return counts

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self.close()
            admin = AIOKafkaAdminClient(**self._kafka.client_kwargs(), client_id=self._client_id)
            await self._kafka.start(admin)
            consumer = AIOKafkaConsumer(
                **self._kafka.client_kwargs(),
                client_id=self._client_id,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                max_partition_fetch_bytes=_FETCH_BYTES,
            )
            try:
                await self._kafka.start(consumer)
            except BaseException:
                await admin.close()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def _read(self, groups: Sequence[GroupSpec]) -> LagReport:
        admin, consumer = await self._connect()
        wanted = list(dict.fromkeys(t for g in groups for t in g.topics))
        partitions, missing = await _partitions(admin, wanted)
        tps = [tp for topic in wanted for tp in partitions.get(topic, [])]
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps) if tps else {}
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps) if tps else {}
        rows: list[tuple[GroupSpec, TopicPartition, int | None, int, int]] = []
        for g in groups:
            mine = [tp for topic in g.topics for tp in partitions.get(topic, [])]
            if not mine:
                continue
            offsets = await admin.list_consumer_group_offsets(g.group, partitions=mine)
            for tp in mine:
                meta = offsets.get(tp)
                committed = meta.offset if meta is not None and meta.offset >= 0 else None
                position, lag = position_and_lag(committed, starts[tp], ends[tp], g.reset)
                rows.append((g, tp, committed, position, lag))
        wanted_ages = {(tp, position) for _, tp, _, position, lag in rows if lag > 0}
        stamps = await self._timestamps(
            consumer, sorted(wanted_ages, key=_order)[:_MAX_AGE_FETCHES]
        )
        now = datetime.now(UTC)
        return LagReport(
            read_at=now,
            partitions=tuple(
                PartitionLag(
                    group=g.group,
                    service=g.service,
                    mapping=g.mapping,
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=committed,
                    end=ends[tp],
                    lag=lag,
                    oldest_age_s=_age(now, stamps.get((tp, position))) if lag > 0 else None,
                )
                for g, tp, committed, position, lag in rows
            ),
            missing_topics=tuple(missing),
        )

    async def _timestamps(
        self, consumer: AIOKafkaConsumer, wanted: Iterable[tuple[TopicPartition, int]]
    ) -> dict[tuple[TopicPartition, int], datetime]:
        """The timestamp of the record at each (partition, offset)."""
        rounds: list[dict[TopicPartition, int]] = []
        for tp, offset in wanted:
            # Two groups can wait at different offsets of one partition: one
            # assignment can seek each partition to one offset, so one round each.
            for r in rounds:
                if tp not in r:
                    r[tp] = offset
                    break
            else:
                rounds.append({tp: offset})
        found: dict[tuple[TopicPartition, int], datetime] = {}
        try:
            for r in rounds:
                found.update(await self._fetch_round(consumer, r))
        finally:
            consumer.assign([])
        return found

    async def _fetch_round(
        self, consumer: AIOKafkaConsumer, seek_to: dict[TopicPartition, int]
    ) -> dict[tuple[TopicPartition, int], datetime]:
        consumer.assign(list(seek_to))
        for tp, offset in seek_to.items():
            consumer.seek(tp, offset)
        found: dict[tuple[TopicPartition, int], datetime] = {}
        deadline = time.monotonic() + self._age_timeout_s
        while len(found) < len(seek_to) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100, max_records=len(seek_to) * 4)
            for tp, records in batch.items():
                wanted = seek_to.get(tp)
                if wanted is None or (tp, wanted) in found:
                    continue
                first = min((r for r in records if r.offset >= wanted), default=None, key=_offset)
                if first is not None:
                    found[(tp, wanted)] = datetime.fromtimestamp(first.timestamp / 1000, UTC)
                    consumer.pause(tp)
        return found


async def _partitions(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> tuple[dict[str, list[TopicPartition]], list[str]]:
    """The partitions of the topics that exist, and the names of those that do not.

    Offsets are asked only of existing topics: a request naming a missing one
    waits out the client's whole timeout."""
    if not topics:
        return {}, []
    described = await admin.describe_topics(topics)
    found: dict[str, list[TopicPartition]] = {}
    for t in described:
        if t["error_code"] == 0 and t["partitions"]:
            found[t["topic"]] = sorted(
                (TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]),
                key=lambda tp: tp.partition,
            )
    return found, [t for t in topics if t not in found]


def _order(item: tuple[TopicPartition, int]) -> tuple[str, int, int]:
    return item[0].topic, item[0].partition, item[1]


def _offset(record: object) -> int:
    value: int = record.offset  # type: ignore[attr-defined]
    return value


def _age(now: datetime, stamp: datetime | None) -> float | None:
    if stamp is None:
        return None
    return round(max((now - stamp).total_seconds(), 0.0), 3)
