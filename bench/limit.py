"""Bench ``limit``: the ceiling of this machine for what a full sync does at its
core — events through Kafka into PostgreSQL — with none of the rules and
neither API.

Two processes run at once, as capture and apply do:

- ``produce``: N ``RecordChanged`` events (tablesync's Avro contract, about 100
  bytes of fields, the shape of a customer) with tablesync's producer settings
  (idempotent, acks=all), in chunks of 5,000 whose acks are awaited;
- ``consume``: a consumer group reads them, decodes each, and upserts them
  into a table with ``executemany`` in batches of up to 5,000, one transaction
  per batch, committing offsets after each.

End to end is from the first send to the last commit."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench.deploy import Databases, Infra
from bench.machine import CpuMeter
from bench.procs import Processes, python_argv
from bench.report import Figure
from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import (
    KafkaConnection,
    KafkaPublisher,
    Message,
    TopicSpec,
    ensure_topics,
)
from tablesync.core.events import RecordChanged

__all__ = ["FIGURES", "run_once"]

BATCH = 5000
PARTITIONS = 6
_TIMEOUT_S = 1800.0

FIGURES = [
    Figure("limit_rps", "limit end to end (produce -> last commit)", "records/s"),
    Figure("limit_records", "records", "records"),
    Figure("limit_produce_rps", "  produce alone (Avro encode + send + ack)", "records/s"),
    Figure("limit_consume_rps", "  consume + decode + upsert + commit", "records/s"),
    Figure("busy_cpus", "CPUs busy on the machine (all work)", "CPUs", 2),
]

_TABLE = """
CREATE TABLE IF NOT EXISTS limit_records (
    id          uuid PRIMARY KEY,
    number      text,
    name        text,
    address     text,
    city        text,
    postal_code text,
    phone       text,
    email       text,
    modified_at timestamptz NOT NULL
)
"""
_UPSERT = """
INSERT INTO limit_records (id, number, name, address, city, postal_code, phone, email, modified_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET number = EXCLUDED.number, name = EXCLUDED.name,
    address = EXCLUDED.address, city = EXCLUDED.city, postal_code = EXCLUDED.postal_code,
    phone = EXCLUDED.phone, email = EXCLUDED.email, modified_at = EXCLUDED.modified_at
"""


def _event(i: int, now: datetime) -> RecordChanged:
    return RecordChanged(
        side="bc",
        table="customers",
        record_id=str(uuid.UUID(int=i + 1, version=4)),
        op="upsert",
        modified_at=now,
        captured_at=now,
        fields={
            "number": f"C{i + 1:06d}",
            "displayName": f"Customer {i + 1}",
            "addressLine1": f"{i + 1} Main Street",
            "city": "Atlanta",
            "postalCode": f"{10000 + i % 89999:05d}",
            "phoneNumber": f"+1 425 555 {i % 10000:04d}",
            "email": f"customer{i + 1}@example.com",
        },
        etag=f'W/"{i + 1}"',
    )


async def produce(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    codec = Codec()
    publisher = KafkaPublisher(KafkaConnection(bootstrap), client_id="tablesync-bench-limit")
    await publisher.start()
    try:
        started = time.time()
        now = datetime.now(UTC)
        for start in range(0, count, BATCH):
            await publisher.publish_many(
                Message(topic, e.record_id.encode(), codec.encode(e))
                for e in (_event(i, now) for i in range(start, min(start + BATCH, count)))
            )
        ended = time.time()
    finally:
        await publisher.stop()
    return {"started": started, "ended": ended, "records": count}


async def consume(bootstrap: str, topic: str, group: str, dsn: str, count: int) -> dict[str, Any]:
    codec = Codec()
    conn = await asyncpg.connect(dsn)
    await conn.execute(_TABLE)
    consumer = AIOKafkaConsumer(
        topic,
        **KafkaConnection(bootstrap).client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            if not batch:
                continue
            if first is None:
                first = time.time()
            rows = []
            for records in batch.values():
                for record in records:
                    event = codec.decode(record.value)
                    assert isinstance(event, RecordChanged)
                    f = event.fields
                    rows.append(
                        (
                            uuid.UUID(event.record_id),
                            f["number"],
                            f["displayName"],
                            f["addressLine1"],
                            f["city"],
                            f["postalCode"],
                            f["phoneNumber"],
                            f["email"],
                            event.modified_at,
                        )
                    )
            async with conn.transaction():
                await conn.executemany(_UPSERT, rows)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
            seen += len(rows)
        ended = time.time()
        stored = await conn.fetchval("SELECT count(*) FROM limit_records")
    finally:
        await consumer.stop()
        await conn.close()
    return {"first": first, "ended": ended, "records": seen, "stored": stored}


async def run_once(infra: Infra, records: int, workdir: Path) -> dict[str, Any]:
    """Both processes against a fresh topic and database, removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    topic = f"bench{tag}.limit.events"
    dbs = Databases(infra, tag)
    dsn = await dbs.create("limit")
    try:
        await ensure_topics(KafkaConnection(infra.kafka), [TopicSpec(topic, PARTITIONS)])
        cpu = CpuMeter()
        cpu.start()
        async with Processes() as procs:
            out_p, out_c = (
                workdir / f"limit-{tag}-produce.json",
                workdir / f"limit-{tag}-consume.json",
            )
            common = ["--bootstrap", infra.kafka, "--topic", topic, "--count", str(records)]
            consumer = await procs.spawn(
                "limit-consume",
                python_argv(
                    "bench.limit",
                    "consume",
                    *common,
                    "--group",
                    f"bench{tag}.limit",
                    "--dsn",
                    dsn,
                    "--out",
                    str(out_c),
                ),
                env=_env(),
                log=workdir / f"limit-{tag}-consume.log",
                cwd=_ROOT,
            )
            producer = await procs.spawn(
                "limit-produce",
                python_argv("bench.limit", "produce", *common, "--out", str(out_p)),
                env=_env(),
                log=workdir / f"limit-{tag}-produce.log",
                cwd=_ROOT,
            )
            for child in (producer, consumer):
                code = await asyncio.wait_for(child.process.wait(), _TIMEOUT_S)
                if code != 0:
                    raise RuntimeError(f"{child.name} exited with {code}:\n{child.tail()}")
        cpu.stop()
        produced = json.loads(out_p.read_text())
        consumed = json.loads(out_c.read_text())
    finally:
        await _delete_topic(infra.kafka, topic)
        await dbs.drop_all()
    e2e = consumed["ended"] - produced["started"]
    return {
        "figures": {
            "limit_rps": records / e2e,
            "limit_records": float(records),
            "limit_produce_rps": records / (produced["ended"] - produced["started"]),
            "limit_consume_rps": records / (consumed["ended"] - consumed["first"]),
            "busy_cpus": cpu.busy_cpus,
        },
        "stored": consumed["stored"],
        "seconds": round(e2e, 2),
    }


_ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ)


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(**KafkaConnection(bootstrap).client_kwargs())
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limit")
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--group")
    parser.add_argument("--dsn")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.role == "produce":
        result = asyncio.run(produce(args.bootstrap, args.topic, args.count))
    else:
        result = asyncio.run(consume(args.bootstrap, args.topic, args.group, args.dsn, args.count))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
