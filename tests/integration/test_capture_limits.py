"""One row over the broker's size limit no longer stops its table: on the
real Kafka, capture sends it to the dead-letter topic with its id, size and
the limit (never its values), moves its checkpoint past it and goes on.
Before, the producer's size error counted as transient: the same publish
was tried for ever and the checkpoint never moved."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaConsumers, KafkaPublisher, ensure_topics
from tablesync.adapters.kafka.window import KafkaWindow
from tablesync.adapters.memory import MemoryDatabase, MemorySingleton, memory_stores
from tablesync.composition import topic_specs, topics_for
from tablesync.core.events import RecordChanged
from tablesync.core.records import Row
from tablesync.emulators.memory import MemorySide
from tablesync.ports.clock import SystemClock
from tablesync.ports.log import MAX_MESSAGE_BYTES
from tablesync.runtime.capture import CaptureService
from tablesync.settings import Settings, SyncSettings
from tests.conftest import InfraEndpoints
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.integration.conftest import topic_prefix
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

_SHARED = (topic_prefix,)
ACCOUNTS = "accounts"


async def test_a_row_over_the_broker_limit_is_dead_lettered_and_capture_moves_on(
    infra: InfraEndpoints, topic_prefix: str
) -> None:
    clock = SystemClock()
    settings = Settings(
        kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
        topic_prefix=topic_prefix,
        sync=SyncSettings(poll_interval_s=0.2, partitions=1, lease_ttl_s=5, lease_renew_s=1),
    )
    topics = topics_for(settings)
    kafka = KafkaConnection.from_settings(settings)
    database = MemoryDatabase(clock)
    stores = memory_stores(database)
    document = {"mappings": {"CUSTOMER": copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])}}
    mappings = await stores.mappings.replace_all(document)
    await ensure_topics(kafka, topic_specs(topics, mappings))
    side = MemorySide("dataverse", clock)
    started = datetime.now(UTC)
    moment = started - timedelta(seconds=1)
    big_id, small_id = str(uuid.uuid4()), str(uuid.uuid4())
    secret = "confidential " * (MAX_MESSAGE_BYTES // 10)
    side.load(
        ACCOUNTS,
        [
            Row(big_id, moment, None, {"accountid": big_id, "name": "Big", "description": secret}),
            Row(
                small_id,
                moment + timedelta(milliseconds=1),
                None,
                {"accountid": small_id, "name": "Small"},
            ),
        ],
    )
    codec = Codec()
    stop = asyncio.Event()
    async with KafkaPublisher(kafka) as publisher:
        capture = CaptureService(
            settings,
            "dataverse",
            stores=stores,
            api=side,
            publisher=publisher,
            consumers=KafkaConsumers(kafka),
            codec=codec,
            clock=clock,
            topics=topics,
            singleton=MemorySingleton(database, "capture.dataverse", ttl_s=5),
        )
        running = asyncio.create_task(capture.run(stop))
        try:

            async def past_both() -> bool:
                mark = await stores.checkpoints.watermark("dataverse", ACCOUNTS)
                return mark is not None and mark >= moment + timedelta(milliseconds=1)

            await wait_for(past_both, timeout_s=60, what="the checkpoint to move past both rows")
            later = side.user_create(ACCOUNTS, {"name": "Later"})

            async def later_captured() -> bool:
                mark = await stores.checkpoints.watermark("dataverse", ACCOUNTS)
                return mark is not None and mark >= later.modified_at

            await wait_for(later_captured, timeout_s=60, what="a later change to be captured")
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=60)

    window = KafkaWindow(kafka)
    since = started - timedelta(minutes=1)
    published = [
        e
        for c in await window.read([topics.cdc("dataverse", ACCOUNTS)], since, None)
        if isinstance(e := codec.decode(c.value), RecordChanged)
    ]
    assert sorted(e.record_id for e in published) == sorted([small_id, later.id])
    letters = await window.read([topics.deadletter], since, None)
    assert len(letters) == 1 and letters[0].value == b""
    assert capture.deadletters.sent == 1
