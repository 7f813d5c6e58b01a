"""An idempotent producer: acks from every in-sync replica, no duplicates on retry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

__all__ = ["KafkaPublisher", "Message"]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class KafkaPublisher:
    """Publishes messages and returns only once the broker acknowledged them."""

    def __init__(self, bootstrap_servers: str, *, client_id: str = "tablesync") -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            request_timeout_ms=30000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, message: Message) -> tuple[int, int]:
        """Sends one message; returns (partition, offset) after the ack."""
        metadata = await self._producer.send_and_wait(
            message.topic,
            message.value,
            key=message.key,
            partition=message.partition,
            headers=list(message.headers) or None,
        )
        return metadata.partition, metadata.offset

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        """Sends every message, then waits for all acks; order per partition is kept."""
        futures: list[asyncio.Future[object]] = []
        for m in messages:
            futures.append(
                await self._producer.send(
                    m.topic,
                    m.value,
                    key=m.key,
                    partition=m.partition,
                    headers=list(m.headers) or None,
                )
            )
        results: Sequence[object] = await asyncio.gather(*futures)
        return [(r.partition, r.offset) for r in results]  # type: ignore[attr-defined]

    async def partitions_for(self, topic: str) -> list[int]:
        parts = await self._producer.partitions_for(topic)
        return sorted(parts)
