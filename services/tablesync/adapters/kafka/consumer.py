"""A consumer for batch processing with manual commits (``ports.log.GroupConsumer``).

Auto-commit is off: the caller commits ``last offset + 1`` per partition only
after the batch's effects are durable. The rebalance hooks run in aiokafka's
coordinator task, beside the caller's batch: revoke before the member rejoins
(it may still commit then), assign once the new partitions are the member's.
Partitions cross this boundary as ``ports.log.TopicPartition`` both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.structs import OffsetAndMetadata

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.ports.log import ConsumerRecord, OffsetReset, PartitionHook, TopicPartition

log = structlog.get_logger(__name__)

__all__ = [
    "SESSION_TIMEOUT_MS",
    "BatchConsumer",
    "ConsumerRecord",
    "KafkaConsumers",
    "PartitionHook",
    "TopicPartition",
]

SESSION_TIMEOUT_MS = 10_000
"""A member silent this long (no heartbeat: crashed, frozen) leaves its group and
its partitions go to the others."""


def _ours(tps: Iterable[KafkaPartition]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(tp.topic, tp.partition) for tp in tps)


def _theirs(tp: TopicPartition) -> KafkaPartition:
    # aiokafka checks isinstance on what it is given.
    return KafkaPartition(tp.topic, tp.partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: PartitionHook | None, on_revoked: PartitionHook | None) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[KafkaPartition]) -> None:
        if self._on_revoked is not None:
            await self._on_revoked(_ours(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[KafkaPartition]) -> None:
        if self._on_assigned is not None:
            await self._on_assigned(_ours(assigned))


class BatchConsumer:
    def __init__(
        self,
        kafka: KafkaConnection,
        group_id: str,
        topics: Iterable[str],
        *,
        client_id: str = "tablesync",
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        fetch_max_wait_ms: int = 100,
        max_poll_interval_ms: int = 600000,
    ) -> None:
        self.topics = tuple(topics)
        self.group_id = group_id
        self._kafka = kafka
        self._consumer = AIOKafkaConsumer(
            **kafka.client_kwargs(),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            fetch_max_wait_ms=fetch_max_wait_ms,
            # What the consumer holds ahead of apply is at most about partitions x
            # this: a long backlog fills the buffer to its bound, not with the backlog.
            max_partition_fetch_bytes=1 << 20,
            fetch_max_bytes=8 << 20,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=max_poll_interval_ms,
        )
        self._listener = _Listener(on_assigned, on_revoked)

    async def start(self) -> None:
        await self._kafka.start(self._consumer)
        self._consumer.subscribe(list(self.topics), listener=self._listener)

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        except asyncio.CancelledError:
            # aiokafka's fetcher, closed while a fetch request waits out its
            # retry backoff (the broker away), cancels that request and
            # re-raises its CancelledError from close(). A cancellation of our
            # own still propagates; that one is only the consumer's.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.info("kafka_consumer_stopped_mid_fetch", group=self.group_id)

    async def next_batch(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {
            TopicPartition(tp.topic, tp.partition): records
            for tp, records in batch.items()
            if records
        }

    async def commit(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Commits, per partition, the offset of the next record to read."""
        if next_offsets:
            await self._consumer.commit(
                {_theirs(tp): OffsetAndMetadata(off, "") for tp, off in next_offsets.items()}
            )

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(_theirs(tp), offset)

    def assignment(self) -> frozenset[TopicPartition]:
        return _ours(self._consumer.assignment())

    async def committed(self, tp: TopicPartition) -> int | None:
        result: int | None = await self._consumer.committed(_theirs(tp))
        return result

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        result = await self._consumer.end_offsets([_theirs(tp) for tp in tps])
        return {TopicPartition(tp.topic, tp.partition): off for tp, off in result.items()}


class KafkaConsumers:
    """``ports.log.ConsumerFactory`` on the broker: members of the groups the
    services name, all on the same brokers."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka

    def __call__(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        client_id: str = "tablesync",
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        max_poll_interval_ms: int = 600_000,
    ) -> BatchConsumer:
        return BatchConsumer(
            self.kafka,
            group_id,
            topics,
            client_id=client_id,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            auto_offset_reset=auto_offset_reset,
            max_poll_interval_ms=max_poll_interval_ms,
        )
