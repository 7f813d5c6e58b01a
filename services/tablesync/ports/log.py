"""What the services need from the event log (Kafka), as small Protocols.

- ``Publisher``: append messages and learn, per message, the partition and
  offset the log acknowledged; a keyed message always lands on the same
  partition of its topic.
- ``GroupConsumer``: one member of a consumer group. The group shares out the
  partitions of the subscribed topics among its members and moves them on a
  rebalance; the member reads batches from its partitions, commits (per
  partition) the offset of the next record to read, and can seek. Offsets are
  committed only when the caller says so.
- ``ConsumerFactory``: how a service makes its members (group, topics and the
  rebalance hooks are the service's own).
- ``LogWindow``: records of some topics between two times, read back (replay).

The Kafka adapter (``adapters.kafka``) and the in-memory log
(``adapters.memory.log``) implement them; ``tests/contract/test_log.py`` holds
both to the same behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "Captured",
    "ConsumerFactory",
    "ConsumerRecord",
    "GroupConsumer",
    "LogWindow",
    "Message",
    "OffsetReset",
    "PartitionHook",
    "Publisher",
    "TopicPartition",
    "message_size",
]


class TopicPartition(NamedTuple):
    """One partition of a topic. A NamedTuple as aiokafka's is, so the two
    compare and hash alike and either can key the same dict."""

    topic: str
    partition: int


class ConsumerRecord(Protocol):
    """One record as a consumer reads it."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None:
        """None only for a record some other writer left without a value."""
        ...

    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch, set when the record was written."""
        ...


@dataclass(frozen=True, slots=True)
class Message:
    """One record to publish; ``partition`` None lets the key decide it."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


MAX_MESSAGE_BYTES = 1 << 20
"""The largest message the log takes by default: Kafka's producer limit
(``max.request.size``), just under the broker's ``message.max.bytes``."""
RECORD_OVERHEAD_BYTES = 82
"""What a record adds to its key, value and headers at most (Kafka's record
batch header and record overhead, as its producer counts them)."""


def message_size(message: Message) -> int:
    """The size the log counts a message at, against its limit."""
    headers = sum(len(name.encode()) + len(value) for name, value in message.headers)
    key = len(message.key) if message.key is not None else 0
    return RECORD_OVERHEAD_BYTES + key + len(message.value) + headers


class Publisher(Protocol):
    async def publish(self, message: Message) -> tuple[int, int]:
        """Appends one message; returns (partition, offset) once the log has it."""
        ...

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        """Appends every message and returns their (partition, offset) acks in
        the order given; the order of the messages of one partition is kept.
        A message over the log's size limit raises ``MessageTooLarge`` naming
        it, and none of the messages is appended."""
        ...

    async def partitions_for(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``, ascending."""
        ...


PartitionHook = Callable[[frozenset[TopicPartition]], Awaitable[None]]
"""A rebalance hook: called with the partitions taken from (revoked) or given
to (assigned) this member. Revoke runs before the member rejoins and may still
commit; assign runs once the new partitions are the member's."""

OffsetReset = Literal["earliest", "latest"]


class GroupConsumer(Protocol):
    async def start(self) -> None:
        """Joins the group; partitions come with the first rebalance."""
        ...

    async def stop(self) -> None:
        """Leaves the group (its partitions go to the others) and closes."""
        ...

    async def next_batch(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to ``max_records`` records of this member's partitions, in offset
        order per partition, from each partition's position on; waits up to
        ``timeout_ms`` for one to arrive (then returns an empty dict). Only
        partitions with records are keys."""
        ...

    async def commit(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Commits, per partition, the offset of the next record to read. A
        partition this member does not own, or a group that rebalanced since
        this member last joined, fails with a ``KafkaError``: the partition may
        be someone else's now."""
        ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next batch of ``tp`` starts at ``offset``; ``tp`` must be owned."""
        ...

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now."""
        ...

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp``, whoever committed it."""
        ...

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Per partition, the offset the next record written will get."""
        ...


class ConsumerFactory(Protocol):
    def __call__(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        client_id: str = "tablesync",
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        max_poll_interval_ms: int = 600_000,
    ) -> GroupConsumer:
        """A member of ``group_id`` subscribed to ``topics``, not started yet.
        A partition the group never committed starts at ``auto_offset_reset``.
        ``max_poll_interval_ms`` bounds how long the caller may take between
        two batches before the group gives its partitions to the others."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class Captured:
    """One record read back from a topic; ordered by the time it was written."""

    timestamp_ms: int
    topic: str
    partition: int
    offset: int
    value: bytes


class LogWindow(Protocol):
    async def read(
        self, sources: Sequence[str], since: datetime, until: datetime | None
    ) -> list[Captured]:
        """Every record of the ``sources`` topics written in [since, until),
        merged across partitions in time order (within a partition, by offset)."""
        ...
