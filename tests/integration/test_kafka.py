"""Events through the real broker: produce, consume in a group, commit, restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import pytest

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import (
    BatchConsumer,
    KafkaConnection,
    KafkaPublisher,
    Message,
    TopicPartition,
    Topics,
    ensure_topics,
)
from tablesync.core.events import RecordChanged
from tests.conftest import InfraEndpoints

pytestmark = pytest.mark.integration
CODEC = Codec()


def _event(i: int) -> RecordChanged:
    now = datetime.now(UTC)
    return RecordChanged(
        side="bc",
        table="customers",
        record_id=f"00000000-0000-0000-0000-{i:012d}",
        op="upsert",
        modified_at=now,
        captured_at=now,
        fields={"number": str(i), "displayName": f"Customer {i}"},
    )


async def _consume_until(
    consumer: BatchConsumer, want: int, timeout_s: float = 30.0
) -> list[tuple[TopicPartition, int, bytes]]:
    got: list[tuple[TopicPartition, int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} events arrived"
        batch = await consumer.next_batch(timeout_ms=500, max_records=100)
        for tp, records in batch.items():
            got.extend((tp, r.offset, r.value) for r in records)
    return got


async def test_events_round_trip_and_committed_ones_are_not_redelivered(
    infra: InfraEndpoints, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix, partitions=3)
    topic = topics.cdc("bc", "customers")
    await ensure_topics(
        KafkaConnection(infra.kafka_bootstrap_servers), [topics.cdc_spec("bc", "customers")]
    )
    group = f"{topic_prefix}apply"

    async with KafkaPublisher(KafkaConnection(infra.kafka_bootstrap_servers)) as publisher:
        events = [_event(i) for i in range(20)]
        await publisher.publish_many(
            Message(topic, e.record_id.encode(), CODEC.encode(e)) for e in events
        )

    consumer = BatchConsumer(KafkaConnection(infra.kafka_bootstrap_servers), group, [topic])
    await consumer.start()
    try:
        first = await _consume_until(consumer, 20)
        decoded = [CODEC.decode(value) for _, _, value in first]
        assert sorted(e.record_id for e in decoded) == sorted(e.record_id for e in events)
        assert {e.fields["displayName"] for e in decoded} == {f"Customer {i}" for i in range(20)}
        # Commit only the first ten per arrival order: the rest must come again.
        committed = first[:10]
        next_offsets: dict[TopicPartition, int] = {}
        for tp, offset, _ in committed:
            next_offsets[tp] = max(next_offsets.get(tp, 0), offset + 1)
        await consumer.commit(next_offsets)
    finally:
        await consumer.stop()

    expected_again = {(tp, off) for tp, off, _ in first if off >= next_offsets.get(tp, 0)}
    consumer = BatchConsumer(KafkaConnection(infra.kafka_bootstrap_servers), group, [topic])
    await consumer.start()
    try:
        again = await _consume_until(consumer, len(expected_again))
        assert {(tp, off) for tp, off, _ in again} == expected_again
        # Nothing more: what was committed is never delivered a second time.
        extra = await consumer.next_batch(timeout_ms=1500, max_records=100)
        assert not extra
    finally:
        await consumer.stop()


async def test_topics_get_their_declared_partition_counts(
    infra: InfraEndpoints, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix, partitions=4)
    specs = [topics.cdc_spec("dataverse", "accounts"), *topics.control_specs()]
    await ensure_topics(KafkaConnection(infra.kafka_bootstrap_servers), specs)
    await ensure_topics(KafkaConnection(infra.kafka_bootstrap_servers), specs)  # idempotent
    async with KafkaPublisher(KafkaConnection(infra.kafka_bootstrap_servers)) as publisher:
        for spec in specs:
            parts = await publisher.partitions_for(spec.name)
            assert len(parts) == spec.partitions, spec.name


async def test_state_database_is_migrated_and_isolated(state_dsn: str) -> None:
    conn = await asyncpg.connect(state_dsn)
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        assert {"couplings", "jobs", "runs", "schema_migrations"} <= tables
        assert await conn.fetchval("SELECT count(*) FROM couplings") == 0
    finally:
        await conn.close()
