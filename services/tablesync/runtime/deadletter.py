"""The dead-letter topic: poison events, byte for byte, with the reason; and
rows too large for the log, by id, size and limit (never their values)."""

from __future__ import annotations

import structlog

from tablesync import metrics
from tablesync.errors import InvalidEvent, MessageTooLarge
from tablesync.ports.log import ConsumerRecord, Message, Publisher

__all__ = ["DeadLetters"]

log = structlog.get_logger()


class DeadLetters:
    def __init__(self, publisher: Publisher, topic: str, consumer: str) -> None:
        self._publisher = publisher
        self._topic = topic
        self._consumer = consumer
        self.sent = 0

    async def send(self, error: InvalidEvent, record: ConsumerRecord) -> None:
        """Publishes the event as read; returns once the broker has it, so its
        offset may count as processed."""
        headers = (
            ("ts.reason", error.reason.encode()),
            ("ts.topic", error.topic.encode()),
            ("ts.partition", str(error.partition).encode()),
            ("ts.offset", str(error.offset).encode()),
            ("ts.consumer", self._consumer.encode()),
        )
        await self._publisher.publish(
            Message(self._topic, record.key, record.value or b"", None, headers)
        )
        self.sent += 1
        metrics.dead_lettered(self._consumer)
        log.warning(
            "event_dead_lettered",
            topic=error.topic,
            partition=error.partition,
            offset=error.offset,
            reason=error.reason,
        )

    async def send_oversized(self, error: MessageTooLarge, record_id: str) -> None:
        """Notes a row whose event the log refused as too large: its id, size
        and the limit, without its values (they may be anyone's data)."""
        reason = f"record {record_id} is {error.size} bytes, over the log's limit of {error.limit}"
        headers = (
            ("ts.reason", reason.encode()),
            ("ts.topic", error.topic.encode()),
            ("ts.record_id", record_id.encode()),
            ("ts.size", str(error.size).encode()),
            ("ts.limit", str(error.limit).encode()),
            ("ts.consumer", self._consumer.encode()),
        )
        await self._publisher.publish(Message(self._topic, error.key, b"", None, headers))
        self.sent += 1
        metrics.dead_lettered(self._consumer)
        log.error(
            "record_too_large",
            topic=error.topic,
            record_id=record_id,
            size=error.size,
            limit=error.limit,
        )
