"""The event log in memory: topics, partitions, offsets and consumer groups,
for the simulator and the contract suite (``tests/contract/test_log.py`` holds
it to the real broker).

What it keeps of Kafka, as aiokafka shows it to the services:

- a keyed record lands on the partition aiokafka's default partitioner picks
  (murmur2 of the key, as the Java client); an unkeyed one on a partition drawn
  from the injected ``rng``; each gets its partition's next offset and a
  timestamp from the injected clock;
- a group shares the partitions of its members' topics round-robin, as
  aiokafka's default assignor does. A join, a leave or a member's session
  running out starts a rebalance: every member runs its revoke hook and
  rejoins; once all have, each gets its new partitions and runs its assign
  hook. The hooks run in each member's own task, beside whatever the member's
  owner is doing, as in aiokafka's coordinator task; from the start of a
  member's revoke until its new partitions arrive its batches are empty;
- a partition first read by a group starts at its committed offset, else at
  ``auto_offset_reset``;
- a member that stops leaves at once; one crashed (``MemoryConsumer.crash``:
  dropped without a stop, as a killed process) stays in the group, its
  partitions held and unread, until its session timeout has passed on the
  event loop's clock;
- a member stalled (``MemoryConsumer.stall``: a process stopped, frozen or in a
  long pause) sends no heartbeat: stalled past its session timeout it is
  dropped from the group, its partitions dealt to the others, and once it
  runs again it rejoins as aiokafka's coordinator does, revoking what it
  thought it owned; until then it may still read and process what it had;
- a commit of a partition the member does not own raises aiokafka's
  ``IllegalStateError``; one made after the member rejoined, or from a
  generation the group has left behind, its ``CommitFailedError``: the
  ``KafkaError`` subclasses the services meet on the broker and retry.

A message over ``max_message_bytes`` (``ports.log.message_size``) is
refused with ``MessageTooLarge`` before any of its call is appended, as the
Kafka adapter refuses one over its producer's limit.

Not modelled: replication, retention, transactions, and a live member being
dropped for taking longer than ``max_poll_interval_ms`` between batches.

Every await of the log goes through ``MemoryBroker._pause(what)`` (or the
``pause`` hook it is given), so a scheduler can interleave tasks there or
raise at one; between two pauses a call acts at once. An exception raised at
a pause of a member's own task (its rebalance steps) crashes that member."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import murmur2

from tablesync.core.topics import TopicSpec
from tablesync.errors import MessageTooLarge
from tablesync.ports.clock import Clock, SystemClock
from tablesync.ports.log import (
    MAX_MESSAGE_BYTES,
    Captured,
    ConsumerRecord,
    Message,
    OffsetReset,
    PartitionHook,
    TopicPartition,
    message_size,
)

__all__ = [
    "MemberCrashed",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryPublisher",
    "MemoryRecord",
    "MemoryWindow",
    "Pause",
    "key_partition",
]

log = structlog.get_logger(__name__)

Pause = Callable[[str], Awaitable[None]]
"""A scheduler's hook, awaited with what the log is about to do."""


def key_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's default partitioner gives a keyed record."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class MemberCrashed(Exception):
    """A call on a consumer that was crashed: its process is gone."""

    def __init__(self, member: str) -> None:
        super().__init__(f"consumer {member} was crashed")
        self.member = member


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One record of a partition (a ``ports.log.ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes], ...] = ()


class MemoryBroker:
    """The topics, their records and the consumer groups of one log.

    ``publisher()``, ``consumer(...)`` (a ``ConsumerFactory``) and ``window()``
    are its ports; ``records``, ``committed`` and ``members`` let a test or
    the simulator look at it."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        session_timeout_s: float = 10.0,
        pause: Pause | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.max_message_bytes = max_message_bytes
        self.rng = rng or random.Random(0)
        self.session_timeout_s = session_timeout_s
        self.pause = pause
        self.consumers: list[MemoryConsumer] = []
        self._logs: dict[str, list[list[MemoryRecord]]] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count(1)

    async def _pause(self, what: str) -> None:
        """Awaited before every step of the log that a real broker would make
        the caller wait for; a subclass or ``pause`` can interleave or raise."""
        if self.pause is not None:
            await self.pause(what)

    # Topics

    def create_topic(self, name: str, partitions: int) -> None:
        """Creates ``name`` with ``partitions`` partitions; an existing topic stays as it is."""
        if name in self._logs:
            return
        if partitions < 1:
            raise ValueError(f"topic {name} needs at least one partition, not {partitions}")
        self._logs[name] = [[] for _ in range(partitions)]
        for group in self._groups.values():
            group.topic_created(name)

    def ensure_topics(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            self.create_topic(spec.name, spec.partitions)

    def topics(self) -> list[str]:
        return sorted(self._logs)

    def partition_count(self, topic: str) -> int:
        return len(self._partitions(topic))

    def records(self, topic: str, partition: int | None = None) -> list[MemoryRecord]:
        """The records of one partition in offset order, or of every
        partition of ``topic`` one after the other."""
        logs = self._partitions(topic)
        if partition is not None:
            return list(self._log(TopicPartition(topic, partition)))
        return [r for p in logs for r in p]

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        group = self._groups.get(group_id)
        return None if group is None else group.committed.get(tp)

    def members(self, group_id: str) -> list[str]:
        """The member ids ``group_id`` counts now, crashed ones included."""
        group = self._groups.get(group_id)
        return [] if group is None else sorted(group.members)

    # Ports

    def publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def window(self) -> MemoryWindow:
        return MemoryWindow(self)

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        client_id: str = "tablesync",
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        max_poll_interval_ms: int = 600_000,
    ) -> MemoryConsumer:
        consumer = MemoryConsumer(
            self,
            self._group(group_id),
            tuple(topics),
            member_id=f"{client_id}-{next(self._member_ids):06d}",
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            auto_offset_reset=auto_offset_reset,
        )
        self.consumers.append(consumer)
        return consumer

    # Inside

    def _partitions(self, topic: str) -> list[list[MemoryRecord]]:
        logs = self._logs.get(topic)
        if logs is None:
            raise UnknownTopicOrPartitionError(f"no topic {topic}")
        return logs

    def _log(self, tp: TopicPartition) -> list[MemoryRecord]:
        logs = self._partitions(tp.topic)
        if not 0 <= tp.partition < len(logs):
            raise UnknownTopicOrPartitionError(f"no partition {tp.partition} of {tp.topic}")
        return logs[tp.partition]

    def _group(self, group_id: str) -> _Group:
        if group_id not in self._groups:
            self._groups[group_id] = _Group(self, group_id)
        return self._groups[group_id]

    def _place(self, message: Message) -> TopicPartition:
        count = len(self._partitions(message.topic))
        if message.partition is not None:
            partition = message.partition
        elif message.key is not None:
            partition = key_partition(message.key, count)
        else:
            partition = self.rng.randrange(count)
        tp = TopicPartition(message.topic, partition)
        self._log(tp)  # an explicit partition past the topic's fails here
        return tp

    def _append_all(self, messages: Sequence[Message]) -> list[tuple[int, int]]:
        # Placed first, so a message for no known partition appends nothing.
        placed = [self._place(m) for m in messages]
        timestamp = int(self.clock.now().timestamp() * 1000)
        acks: list[tuple[int, int]] = []
        for tp, m in zip(placed, messages, strict=True):
            records = self._log(tp)
            records.append(
                MemoryRecord(
                    tp.topic, tp.partition, len(records), m.key, m.value, timestamp, m.headers
                )
            )
            acks.append((tp.partition, len(records) - 1))
        written = {tp.topic for tp in placed}
        for consumer in self.consumers:
            if written.intersection(consumer.topics):
                consumer._wake.set()
        return acks


class _Group:
    """One consumer group: its members, generation, shares and committed offsets."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.members: dict[str, MemoryConsumer] = {}
        self.generation = 0
        self.rebalancing = False
        self.joined: set[str] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.shares: dict[str, frozenset[TopicPartition]] = {}

    def add(self, member: MemoryConsumer) -> None:
        self.members[member.member_id] = member
        member._rejoin_needed()
        self._rebalance()

    def remove(self, member: MemoryConsumer) -> None:
        if self.members.pop(member.member_id, None) is None:
            return
        self.joined.discard(member.member_id)
        self._rebalance()

    def rejoined(self, member: MemoryConsumer) -> None:
        if member.member_id not in self.members:
            return
        if not self.rebalancing:
            # A join that crossed the end of the rebalance it answered (the
            # member was frozen meanwhile): a member the group holds gets its
            # share again, as the coordinator answers a known member of a
            # stable group.
            member._deliver(self.generation, self.shares.get(member.member_id, frozenset()))
            return
        self.joined.add(member.member_id)
        self._complete_if_all_joined()

    def topic_created(self, topic: str) -> None:
        if any(topic in m.topics for m in self.members.values()):
            self._rebalance()

    def _rebalance(self) -> None:
        if not self.rebalancing:
            self.rebalancing = True
            self.joined = set()
            for member in self.members.values():
                member._rejoin_needed()
        self._complete_if_all_joined()

    def _complete_if_all_joined(self) -> None:
        if not self.rebalancing or not set(self.members) <= self.joined:
            return
        self.rebalancing = False
        if not self.members:
            return
        self.generation += 1
        self.shares = self._round_robin()
        for member_id, share in self.shares.items():
            self.members[member_id]._deliver(self.generation, share)
        log.debug("memory_group_rebalanced", group=self.group_id, generation=self.generation)

    def _round_robin(self) -> dict[str, frozenset[TopicPartition]]:
        """aiokafka's ``RoundRobinPartitionAssignor``: every partition of the
        members' topics in order, dealt to the members sorted by id, each
        skipping a member not subscribed to its topic."""
        subscribed = {t for m in self.members.values() for t in m.topics}
        partitions = sorted(
            TopicPartition(topic, p)
            for topic in subscribed
            if topic in self.broker._logs
            for p in range(len(self.broker._logs[topic]))
        )
        shares: dict[str, set[TopicPartition]] = {m: set() for m in self.members}
        dealer = itertools.cycle(sorted(self.members))
        for tp in partitions:
            member_id = next(dealer)
            while tp.topic not in self.members[member_id].topics:
                member_id = next(dealer)
            shares[member_id].add(tp)
        return {m: frozenset(s) for m, s in shares.items()}


_State = Literal["new", "running", "stopped", "crashed"]


class MemoryConsumer:
    """One member of a group (a ``ports.log.GroupConsumer``)."""

    def __init__(
        self,
        broker: MemoryBroker,
        group: _Group,
        topics: tuple[str, ...],
        *,
        member_id: str,
        on_assigned: PartitionHook | None,
        on_revoked: PartitionHook | None,
        auto_offset_reset: OffsetReset,
    ) -> None:
        self.broker = broker
        self.group_id = group.group_id
        self.topics = topics
        self.member_id = member_id
        self._group = group
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._reset = auto_offset_reset
        self._state: _State = "new"
        self._generation = 0
        self._assignment: frozenset[TopicPartition] | None = None
        self._positions: dict[TopicPartition, int] = {}
        # From the start of this member's revoke until its new share arrives.
        self._rebalancing = False
        # Rejoined for the rebalance under way: the old generation can no longer commit.
        self._joined = False
        self._rejoin = False
        self._delivery: tuple[int, frozenset[TopicPartition]] | None = None
        self._work = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rotation = 0

    @property
    def state(self) -> _State:
        return self._state

    async def start(self) -> None:
        await self.broker._pause(f"start {self.member_id}")
        if self._state != "new":
            raise IllegalStateError(f"consumer {self.member_id} was started before")
        self._state = "running"
        self._group.add(self)
        self._task = asyncio.get_running_loop().create_task(
            self._coordinate(), name=f"memory consumer {self.member_id}"
        )

    async def stop(self) -> None:
        await self.broker._pause(f"stop {self.member_id}")
        if self._state != "running":
            if self._state == "new":
                self._state = "stopped"
            return
        self._state = "stopped"
        self._end_task()
        self._group.remove(self)
        self._wake.set()

    def crash(self) -> None:
        """Drops the member as a killed process would: no leave, no hooks; the
        group counts it until its session timeout has passed."""
        if self._state == "crashed":
            return
        was_member = self._state == "running"
        self._state = "crashed"
        self._end_task()
        self._wake.set()
        if was_member:
            asyncio.get_running_loop().call_later(
                self.broker.session_timeout_s, self._group.remove, self
            )

    def stall(self, seconds: float) -> None:
        """Stops the member's heartbeats for ``seconds``, as a frozen process's:
        longer than the session timeout, the group drops it, and it rejoins
        when it runs again. Its own calls wait out the freeze on its owner's
        side (the scheduler holds a stalled process's tasks)."""
        if self._state != "running" or seconds <= self.broker.session_timeout_s:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self.broker.session_timeout_s, self._group.remove, self)
        loop.call_later(seconds, self._wake_from_stall)

    def _wake_from_stall(self) -> None:
        if self._state == "running" and self.member_id not in self._group.members:
            # Its heartbeat is refused: it joins again, under a new generation.
            self._group.add(self)

    async def next_batch(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        await self.broker._pause(f"fetch {self.member_id}")
        self._check_running()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            self._wake.clear()
            batch = self._take(max_records)
            if batch:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return {}
            self._check_running()

    async def commit(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        await self.broker._pause(f"commit {self.member_id}")
        self._check_running()
        if not next_offsets:
            return
        if self._assignment is None:
            raise IllegalStateError("No partitions assigned")
        for tp in next_offsets:
            if tp not in self._assignment:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        if (
            self._joined
            or self._generation != self._group.generation
            or self.member_id not in self._group.members
        ):
            raise CommitFailedError(
                "Commit cannot be completed since the group has already rebalanced"
                " and may have assigned the partitions to another member"
            )
        for tp, offset in next_offsets.items():
            self._group.committed[TopicPartition(tp.topic, tp.partition)] = offset
        await self.broker._pause(f"committed {self.member_id}")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_running()
        if self._assignment is None or tp not in self._assignment:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self._positions[TopicPartition(tp.topic, tp.partition)] = offset
        self._wake.set()

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assignment or frozenset()

    async def committed(self, tp: TopicPartition) -> int | None:
        await self.broker._pause(f"committed? {self.member_id}")
        self._check_running()
        return self._group.committed.get(tp)

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        await self.broker._pause(f"end offsets {self.member_id}")
        self._check_running()
        return {TopicPartition(tp.topic, tp.partition): len(self.broker._log(tp)) for tp in tps}

    # The member's own task: what aiokafka's coordinator task does for it.

    async def _coordinate(self) -> None:
        try:
            while True:
                self._work.clear()
                if self._delivery is not None:
                    await self._take_share(*self._delivery)
                elif self._rejoin:
                    await self._revoke_and_rejoin()
                else:
                    await self._work.wait()
        except Exception:
            log.warning("memory_consumer_crashed", member=self.member_id, exc_info=True)
            self.crash()

    async def _take_share(self, generation: int, share: frozenset[TopicPartition]) -> None:
        self._delivery = None
        self._generation = generation
        self._assignment = share
        self._positions = {tp: self._start_position(tp) for tp in share}
        self._rebalancing = False
        self._joined = False
        self._wake.set()
        await self.broker._pause(f"assigned {self.member_id}")
        await self._hook(self._on_assigned, share, "assigned")

    async def _revoke_and_rejoin(self) -> None:
        self._rejoin = False
        self._rebalancing = True
        await self.broker._pause(f"revoke {self.member_id}")
        await self._hook(self._on_revoked, self.assignment(), "revoked")
        self._joined = True
        await self.broker._pause(f"rejoin {self.member_id}")
        self._group.rejoined(self)

    async def _hook(
        self, hook: PartitionHook | None, tps: frozenset[TopicPartition], what: str
    ) -> None:
        if hook is None:
            return
        try:
            await hook(tps)
        except Exception:
            # As aiokafka: a failing hook is logged and the rebalance goes on.
            log.exception("memory_consumer_hook_failed", member=self.member_id, hook=what)

    def _end_task(self) -> None:
        task = self._task
        self._task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _rejoin_needed(self) -> None:
        self._rejoin = True
        self._work.set()

    def _deliver(self, generation: int, share: frozenset[TopicPartition]) -> None:
        self._delivery = (generation, share)
        self._work.set()

    def _start_position(self, tp: TopicPartition) -> int:
        committed = self._group.committed.get(tp)
        if committed is not None:
            return committed
        return 0 if self._reset == "earliest" else len(self.broker._log(tp))

    def _take(self, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self._rebalancing or not self._assignment:
            return {}
        # Starting one partition further each time keeps a busy partition
        # from starving the others when batches are small.
        order = sorted(self._assignment)
        first = self._rotation % len(order)
        self._rotation += 1
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        room = max_records
        for tp in order[first:] + order[:first]:
            if room <= 0:
                break
            records = self.broker._log(tp)
            position = self._positions.get(tp, 0)
            taken: list[ConsumerRecord] = list(records[position : position + room])
            if taken:
                batch[tp] = taken
                self._positions[tp] = position + len(taken)
                room -= len(taken)
        return batch

    def _check_running(self) -> None:
        if self._state == "crashed":
            raise MemberCrashed(self.member_id)
        if self._state == "stopped":
            raise ConsumerStoppedError()
        if self._state == "new":
            raise IllegalStateError(f"consumer {self.member_id} is not started")


class MemoryPublisher:
    """Appends to the broker's partitions (a ``ports.log.Publisher``)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __aenter__(self) -> MemoryPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish(self, message: Message) -> tuple[int, int]:
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        batch = list(messages)
        if not batch:
            return []
        limit = self._broker.max_message_bytes
        for m in batch:
            if (size := message_size(m)) > limit:
                raise MessageTooLarge(m.topic, m.key, size, limit)
        topics = ",".join(sorted({m.topic for m in batch}))
        await self._broker._pause(f"publish {topics}")
        acks = self._broker._append_all(batch)
        # Written but not yet acknowledged: a crash here leaves the records in
        # the log without the publisher knowing, as a lost ack does.
        await self._broker._pause(f"published {topics}")
        return acks

    async def partitions_for(self, topic: str) -> list[int]:
        await self._broker._pause(f"partitions {topic}")
        return list(range(self._broker.partition_count(topic)))


class MemoryWindow:
    """``ports.log.LogWindow`` on the broker: the first offset written at or
    after ``since`` up to the first written at or after ``until``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def read(
        self, sources: Sequence[str], since: datetime, until: datetime | None
    ) -> list[Captured]:
        await self._broker._pause("window")
        since_ms = int(since.timestamp() * 1000)
        until_ms = None if until is None else int(until.timestamp() * 1000)
        per_partition: list[list[Captured]] = []
        for topic in sources:
            logs = self._broker._logs.get(topic)
            if logs is None:
                continue
            for records in logs:
                start = _first_at_or_after(records, since_ms)
                end = len(records) if until_ms is None else _first_at_or_after(records, until_ms)
                per_partition.append(
                    [
                        Captured(r.timestamp, r.topic, r.partition, r.offset, r.value or b"")
                        for r in records[start:end]
                    ]
                )
        return list(heapq.merge(*per_partition))


def _first_at_or_after(records: Sequence[MemoryRecord], timestamp_ms: int) -> int:
    return next((r.offset for r in records if r.timestamp >= timestamp_ms), len(records))
