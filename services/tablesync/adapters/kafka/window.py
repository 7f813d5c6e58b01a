"""A time window of records read back from retained topics (for replay)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.ports.log import Captured

__all__ = ["KafkaWindow"]


class KafkaWindow:
    """``LogWindow`` on the broker: offsets found by timestamp, one
    unsubscribed consumer that reads each partition to the window's end."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self._kafka = kafka

    async def read(
        self, sources: Sequence[str], since: datetime, until: datetime | None
    ) -> list[Captured]:
        return await _read_window(self._kafka, list(sources), since, until)


async def _read_window(
    kafka: KafkaConnection, sources: list[str], since: datetime, until: datetime | None
) -> list[Captured]:
    partitions = await _partitions(kafka, sources)
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    await kafka.start(consumer)
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
        per_partition: list[list[Captured]] = []
        for tp in partitions:
            start = starts.get(tp)
            if start is None or start.offset >= ends[tp]:
                continue
            consumer.seek(tp, start.offset)
            per_partition.append(await _read_partition(consumer, tp, ends[tp]))
        return list(heapq.merge(*per_partition))
    finally:
        await consumer.stop()


async def _partitions(kafka: KafkaConnection, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await kafka.start(admin)
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
) -> list[Captured]:
    found: list[Captured] = []
    others = [p for p in consumer.assignment() if p != tp]
    consumer.pause(*others)
    try:
        while (await consumer.position(tp)) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                found.append(
                    Captured(record.timestamp, tp.topic, tp.partition, record.offset, record.value)
                )
    finally:
        consumer.resume(*others)
    return found
