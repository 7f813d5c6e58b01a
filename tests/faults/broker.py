"""What the suite asks of the broker directly: poison on the change topics,
consumer lag of the apply groups, and the dead-letter topic's contents."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher, Message, Topics
from tablesync.core.events import RecordChanged, Side

__all__ = [
    "DeadLetter",
    "Poison",
    "apply_lag",
    "dead_letters",
    "poison_message",
    "publish",
    "published",
    "read_topic",
]

_CODEC = Codec()


@dataclass(frozen=True)
class Poison:
    kind: str
    topic: str
    value: bytes


def poison_message(kind: str, topics: Topics, side: Side, table: str, k: int) -> Poison:
    """A poison event for a change topic; each one's bytes are unique, so it
    can be found again in the dead-letter topic."""
    topic = topics.cdc(side, table)
    if kind == "undecodable":
        return Poison(kind, topic, f"\x00\x01 not avro at all #{k}".encode())
    now = datetime.now(UTC)
    event = RecordChanged(
        side=side,
        table="widgets",
        record_id=str(uuid.uuid4()),
        op="upsert",
        modified_at=now,
        captured_at=now,
        fields={"name": f"widget {k}"},
    )
    return Poison(kind, topic, _CODEC.encode(event))


async def publish(bootstrap: str, poison: Poison, timeout_s: float) -> None:
    publisher = KafkaPublisher(KafkaConnection(bootstrap), client_id="tablesync-faults")
    try:
        async with asyncio.timeout(timeout_s):
            await publisher.start()
            await publisher.publish(Message(poison.topic, b"poison", poison.value))
    finally:
        await publisher.stop()


async def apply_lag(bootstrap: str, groups: dict[str, list[str]]) -> dict[str, int]:
    """Per apply group, how many records of its topics are not committed yet
    (a partition the group never committed on counts from its start)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await consumer.start()
        try:
            lag: dict[str, int] = {}
            for group, topics in groups.items():
                tps = [TopicPartition(t, p) for t in topics for p in await _partitions(admin, t)]
                ends = await consumer.end_offsets(tps)
                committed = await admin.list_consumer_group_offsets(group)
                behind = 0
                for tp in tps:
                    done = committed.get(tp)
                    behind += ends[tp] - (
                        done.offset if done is not None and done.offset >= 0 else 0
                    )
                lag[group] = behind
            return lag
        finally:
            await consumer.stop()
    finally:
        await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    described = await admin.describe_topics([topic])
    parts = sorted(p["partition"] for d in described for p in d["partitions"])
    if not parts:
        raise AssertionError(f"the broker does not know the topic {topic}")
    return parts


@dataclass(frozen=True)
class DeadLetter:
    value: bytes
    headers: dict[str, str]


async def dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Everything on the dead-letter topic, with its headers."""
    found: list[DeadLetter] = []
    for records in (await _read(bootstrap, topic)).values():
        found.extend(DeadLetter(r.value or b"", _headers(r.headers)) for r in records)
    return found


def _headers(raw: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in raw}


async def read_topic(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    """Every value of ``topic`` up to its end, per partition."""
    return {p: [r.value or b"" for r in rs] for p, rs in (await _read(bootstrap, topic)).items()}


async def _read(bootstrap: str, topic: str) -> dict[int, list[ConsumerRecord]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(admin, topic)]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[int, list[ConsumerRecord]] = {tp.partition: [] for tp in tps}
        positions = dict.fromkeys(tps, 0)
        while any(positions[tp] < ends[tp] for tp in tps):
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        found[tp.partition].append(r)
                    positions[tp] = r.offset + 1
        return found
    finally:
        await consumer.stop()


async def published(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds over all its partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await _partitions(admin, topic)]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()
    finally:
        await admin.close()
