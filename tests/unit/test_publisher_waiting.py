"""The publisher tells an operator it waits for the broker the same way
whether a send is held up before its partitions are known (a topic not sent
to yet, the broker away) or after, while its acks are."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from structlog.testing import capture_logs

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.adapters.kafka.producer import KafkaPublisher
from tablesync.ports.log import Message


class _BrokerAway:
    """aiokafka's producer while the broker is away and the topic's
    partitions were never fetched: the metadata wait ends in this error."""

    async def send(self, topic: str, value: bytes, **_: Any) -> Any:
        raise UnknownTopicOrPartitionError()


async def test_a_send_waiting_for_partitions_says_it_waits_for_the_broker() -> None:
    publisher = KafkaPublisher(KafkaConnection("127.0.0.1:9"))
    await publisher._producer.stop()
    publisher._producer = _BrokerAway()  # type: ignore[assignment]
    messages = [
        Message("t.cdc.bc.customers", b"k", b"v"),
        Message("t.cdc.bc.customers", b"j", b"w"),
    ]
    with capture_logs() as logs, pytest.raises(UnknownTopicOrPartitionError):
        await publisher.publish_many(messages)
    (waiting,) = [e for e in logs if e["event"] == "kafka_publish_waiting"]
    assert waiting["topic"] == "t.cdc.bc.customers"
    assert waiting["unsent"] == 2 and waiting["of"] == 2
    assert "broker is away" in waiting["reason"]
