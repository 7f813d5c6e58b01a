"""An idempotent producer (``ports.log.Publisher``): acks from every in-sync
replica, no duplicates on retry; keyed messages go where aiokafka's default
partitioner (murmur2 of the key) puts them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.errors import MessageTooLarge
from tablesync.ports.log import MAX_MESSAGE_BYTES, Message

__all__ = ["KafkaPublisher", "Message"]

log = structlog.get_logger(__name__)

# While the broker is away the producer keeps unacknowledged batches and sends
# them when it is back (the leader stays known, so they never expire): the
# caller waits. Saying so every so often is what tells an operator why
# publishing stopped.
_WAITING_WARN_S = 10.0


class KafkaPublisher:
    """Publishes messages and returns only once the broker acknowledged them."""

    def __init__(self, kafka: KafkaConnection, *, client_id: str = "tablesync") -> None:
        self._kafka = kafka
        self._producer = AIOKafkaProducer(
            **kafka.client_kwargs(),
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=30000,
        )

    async def start(self) -> None:
        await self._kafka.start(self._producer)

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, message: Message) -> tuple[int, int]:
        """Sends one message; returns (partition, offset) after the ack."""
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        """Sends every message, then waits for all acks; order per partition is kept.
        One over the producer's size limit is refused before any is sent: the
        producer would refuse it on its own only after sending the ones before."""
        batch = list(messages)
        for m in batch:
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(m.key, m.value, list(m.headers))
            if size > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(m.topic, m.key, size, MAX_MESSAGE_BYTES)
        futures: list[asyncio.Future[object]] = []
        for m in batch:
            try:
                futures.append(
                    await self._producer.send(
                        m.topic,
                        m.value,
                        key=m.key,
                        partition=m.partition,
                        headers=list(m.headers) or None,
                    )
                )
            except (UnknownTopicOrPartitionError, KafkaTimeoutError):
                # A topic this producer has not sent to yet needs its partitions
                # from the broker first; with the broker away the wait ends in
                # this error, which names no broker. The caller tries again; the
                # operator is told the same as while acks are held up.
                log.warning(
                    "kafka_publish_waiting",
                    unsent=len(batch) - len(futures),
                    of=len(batch),
                    topic=m.topic,
                    reason="no partitions known for the topic: the broker is away "
                    "or the topic does not exist",
                )
                raise
        results = await self._acknowledged(futures)
        return [(r.partition, r.offset) for r in results]

    async def _acknowledged(self, futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
        """Waits for every ack, warning while the broker keeps them waiting.

        Never gives up and sends again: the producer still holds the batches,
        and a second copy would only follow the first."""
        started = time.monotonic()
        pending = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=_WAITING_WARN_S)
            if pending:
                log.warning(
                    "kafka_publish_waiting",
                    unacknowledged=len(pending),
                    of=len(futures),
                    waited_s=round(time.monotonic() - started, 1),
                )
        return [f.result() for f in futures]

    async def partitions_for(self, topic: str) -> list[int]:
        parts = await self._producer.partitions_for(topic)
        return sorted(parts)
