"""Kafka through aiokafka: topics, an idempotent publisher and a batch consumer."""

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.adapters.kafka.consumer import (
    BatchConsumer,
    ConsumerRecord,
    KafkaConsumers,
    TopicPartition,
)
from tablesync.adapters.kafka.producer import KafkaPublisher, Message
from tablesync.adapters.kafka.topics import Topics, TopicSpec, ensure_topics

__all__ = [
    "BatchConsumer",
    "ConsumerRecord",
    "KafkaConnection",
    "KafkaConsumers",
    "KafkaPublisher",
    "Message",
    "TopicPartition",
    "TopicSpec",
    "Topics",
    "ensure_topics",
]
