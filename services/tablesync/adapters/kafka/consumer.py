"""A consumer for batch processing with manual commits.

Auto-commit is off: the caller commits ``last offset + 1`` per partition only
after the batch's effects are durable. On a rebalance the caller's hooks run
inside the consumer's poll, between batches, so a revoked partition never has
half a batch in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

log = structlog.get_logger(__name__)

__all__ = ["BatchConsumer", "ConsumerRecord", "PartitionHook", "TopicPartition"]

PartitionHook = Callable[[frozenset[TopicPartition]], Awaitable[None]]


async def _noop(_: frozenset[TopicPartition]) -> None:
    return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: PartitionHook, on_revoked: PartitionHook) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._on_revoked(frozenset(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._on_assigned(frozenset(assigned))


class BatchConsumer:
    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topics: Iterable[str],
        *,
        client_id: str = "tablesync",
        on_assigned: PartitionHook = _noop,
        on_revoked: PartitionHook = _noop,
        auto_offset_reset: str = "earliest",
        fetch_max_wait_ms: int = 100,
        max_poll_interval_ms: int = 600000,
    ) -> None:
        self.topics = tuple(topics)
        self.group_id = group_id
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            fetch_max_wait_ms=fetch_max_wait_ms,
            # What the consumer holds ahead of apply is at most about partitions x
            # this: a long backlog fills the buffer to its bound, not with the backlog.
            max_partition_fetch_bytes=1 << 20,
            fetch_max_bytes=8 << 20,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=max_poll_interval_ms,
        )
        self._listener = _Listener(on_assigned, on_revoked)

    async def start(self) -> None:
        await self._consumer.start()
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
        batch: dict[TopicPartition, list[ConsumerRecord]] = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
        return {tp: records for tp, records in batch.items() if records}

    async def commit(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Commits, per partition, the offset of the next record to read."""
        if next_offsets:
            await self._consumer.commit(
                {tp: OffsetAndMetadata(off, "") for tp, off in next_offsets.items()}
            )

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._consumer.assignment())

    async def committed(self, tp: TopicPartition) -> int | None:
        result: int | None = await self._consumer.committed(tp)
        return result

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = await self._consumer.end_offsets(list(tps))
        return result
