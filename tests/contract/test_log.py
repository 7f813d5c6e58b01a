"""The log ports held to one contract: the in-memory broker and the real
Kafka broker (through ``adapters.kafka``) pass the same suite, so what the
simulation learns on the first holds on the second.

Waits are on conditions (a hook called, a record arrived) with a deadline,
never sleeps; the broker's rebalances take a second or two each, so its
cases keep to a few."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import CommitFailedError, KafkaError

from tablesync.adapters.kafka import KafkaConnection, KafkaConsumers, KafkaPublisher, ensure_topics
from tablesync.adapters.kafka.topics import delete_topics
from tablesync.adapters.kafka.window import KafkaWindow
from tablesync.adapters.memory.log import MemberCrashed, MemoryBroker, key_partition
from tablesync.core.topics import TopicSpec
from tablesync.errors import MessageTooLarge
from tablesync.ports.log import (
    MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD_BYTES,
    ConsumerFactory,
    ConsumerRecord,
    GroupConsumer,
    LogWindow,
    Message,
    PartitionHook,
    Publisher,
    TopicPartition,
    message_size,
)
from tests.conftest import InfraEndpoints

Read = tuple[TopicPartition, int, bytes | None]


@dataclass
class LogUnderTest:
    """One implementation of the log ports, with fresh names per test."""

    publisher: Publisher
    consumers: ConsumerFactory
    window: LogWindow
    create: Callable[[TopicSpec], asyncio.Future[None] | None]
    prefix: str
    timeout_s: float
    started: list[GroupConsumer] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    async def topic(self, partitions: int) -> str:
        name = f"{self.prefix}cdc.contract.t{next(self._names)}"
        created = self.create(TopicSpec(name, partitions))
        if created is not None:
            await created
        return name

    def group(self) -> str:
        return f"{self.prefix}group.{next(self._names)}"

    def member(self, group: str, topics: Sequence[str], **kwargs: object) -> Member:
        return Member(self, group, topics, **kwargs)

    async def consumer(self, group: str, topics: Sequence[str], **kwargs: object) -> GroupConsumer:
        consumer = self.consumers(group, topics, **kwargs)  # type: ignore[arg-type]
        await consumer.start()
        self.started.append(consumer)
        return consumer

    async def close(self) -> None:
        for consumer in self.started:
            await consumer.stop()


class Member:
    """A consumer whose rebalance hooks are recorded, to wait on."""

    def __init__(
        self, log: LogUnderTest, group: str, topics: Sequence[str], **kwargs: object
    ) -> None:
        self.log = log
        self.hooks: list[tuple[str, frozenset[TopicPartition]]] = []
        self.changed = asyncio.Event()
        self._group = group
        self._topics = topics
        self._kwargs = kwargs
        self.consumer: GroupConsumer | None = None

    async def start(self) -> Member:
        self.consumer = await self.log.consumer(
            self._group,
            self._topics,
            on_assigned=self._hook("assigned"),
            on_revoked=self._hook("revoked"),
            **self._kwargs,
        )
        return self

    def _hook(self, name: str) -> PartitionHook:
        async def hook(tps: frozenset[TopicPartition]) -> None:
            self.hooks.append((name, tps))
            self.changed.set()

        return hook

    def owns(self) -> frozenset[TopicPartition]:
        assert self.consumer is not None
        return self.consumer.assignment()

    def last(self, name: str) -> frozenset[TopicPartition] | None:
        found = [tps for hook, tps in self.hooks if hook == name]
        return found[-1] if found else None


async def until(
    condition: Callable[[], bool], members: Sequence[Member], timeout_s: float, what: str
) -> None:
    """Waits for a hook of any of ``members`` to make ``condition`` true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        for m in members:
            m.changed.clear()
        if condition():
            return
        remaining = deadline - loop.time()
        assert remaining > 0, f"timed out waiting for {what}"
        waits = [asyncio.ensure_future(m.changed.wait()) for m in members]
        try:
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


async def read(consumer: GroupConsumer, want: int, timeout_s: float) -> list[Read]:
    """Reads until ``want`` records came (in arrival order), then checks that
    no more follow at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    got: list[Read] = []
    while len(got) < want:
        assert loop.time() < deadline, f"only {len(got)} of {want} records arrived"
        batch = await consumer.next_batch(timeout_ms=200, max_records=100)
        for tp, records in batch.items():
            assert all(r.topic == tp.topic and r.partition == tp.partition for r in records)
            got.extend((tp, r.offset, r.value) for r in records)
    return got


async def read_records(
    consumer: GroupConsumer, want: int, timeout_s: float
) -> list[ConsumerRecord]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    got: list[ConsumerRecord] = []
    while len(got) < want:
        assert loop.time() < deadline, f"only {len(got)} of {want} records arrived"
        for records in (await consumer.next_batch(timeout_ms=200, max_records=100)).values():
            got.extend(records)
    return got


def _values(n: int, tag: str = "v") -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(n)]


class LogContract:
    """The behaviour every implementation of the log ports shares."""

    @pytest.fixture
    def log(self) -> LogUnderTest:
        """The implementation under test; each subclass gives its own."""
        raise NotImplementedError

    async def test_acks_give_offsets_in_order_per_partition(self, log: LogUnderTest) -> None:
        topic = await log.topic(2)
        assert await log.publisher.partitions_for(topic) == [0, 1]
        messages = [Message(topic, None, v, partition=i % 2) for i, v in enumerate(_values(10))]
        acks = await log.publisher.publish_many(messages)
        assert acks == [(i % 2, i // 2) for i in range(10)]
        more = await log.publisher.publish_many(
            [Message(topic, None, b"x", partition=1), Message(topic, None, b"y", partition=1)]
        )
        assert more == [(1, 5), (1, 6)]
        assert await log.publisher.publish(Message(topic, None, b"z", partition=0)) == (0, 5)

    async def test_keyed_records_land_where_the_default_partitioner_puts_them(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(3)
        keys = [str(uuid.UUID(int=i * 7919)).encode() for i in range(24)]
        acks = await log.publisher.publish_many(Message(topic, k, b"v") for k in keys)
        assert [p for p, _ in acks] == [key_partition(k, 3) for k in keys]
        assert len({p for p, _ in acks}) == 3
        again = await log.publisher.publish_many(Message(topic, k, b"w") for k in keys[:5])
        assert [p for p, _ in again] == [p for p, _ in acks[:5]]

    async def test_a_new_group_reads_from_the_start_and_resumes_where_it_committed(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(2)
        await log.publisher.publish_many(
            Message(topic, None, v, partition=0) for v in _values(6, "a")
        )
        await log.publisher.publish_many(
            Message(topic, None, v, partition=1) for v in _values(2, "b")
        )
        group = log.group()
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

        first = await log.consumer(group, [topic])
        got = await read(first, 8, log.timeout_s)
        by_partition = {tp: [(o, v) for t, o, v in got if t == tp] for tp in (p0, p1)}
        assert by_partition[p0] == list(enumerate(_values(6, "a")))
        assert by_partition[p1] == list(enumerate(_values(2, "b")))
        assert await first.committed(p0) is None
        await first.commit({p0: 4, p1: 2})
        assert await first.committed(p0) == 4
        await first.stop()

        second = await log.consumer(group, [topic])
        again = await read(second, 2, log.timeout_s)
        assert again == [(p0, 4, b"a4"), (p0, 5, b"a5")]
        assert await second.next_batch(timeout_ms=300, max_records=10) == {}
        assert await second.committed(p1) == 2

    async def test_seek_moves_the_next_batch_and_end_offsets_count_records(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(2)
        await log.publisher.publish_many(Message(topic, None, v, partition=0) for v in _values(5))
        await log.publisher.publish(Message(topic, None, b"only", partition=1))
        consumer = await log.consumer(log.group(), [topic])
        await read(consumer, 6, log.timeout_s)
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        assert await consumer.end_offsets([p0, p1]) == {p0: 5, p1: 1}
        consumer.seek(p0, 2)
        assert await read(consumer, 3, log.timeout_s) == [
            (p0, 2, b"v2"),
            (p0, 3, b"v3"),
            (p0, 4, b"v4"),
        ]
        assert consumer.assignment() == {p0, p1}

    async def test_latest_reads_only_what_comes_after_the_assignment(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(1)
        await log.publisher.publish_many(Message(topic, None, v, partition=0) for v in _values(3))
        member = await log.member(log.group(), [topic], auto_offset_reset="latest").start()
        await until(lambda: bool(member.owns()), [member], log.timeout_s, "an assignment")
        assert member.consumer is not None
        assert await member.consumer.next_batch(timeout_ms=500, max_records=10) == {}
        await log.publisher.publish(Message(topic, None, b"new", partition=0))
        assert await read(member.consumer, 1, log.timeout_s) == [
            (TopicPartition(topic, 0), 3, b"new")
        ]

    async def test_members_split_the_partitions_and_one_leaving_hands_its_own_over(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(4)
        every = frozenset(TopicPartition(topic, p) for p in range(4))
        group = log.group()
        a = await log.member(group, [topic], client_id="contract-a").start()
        await until(lambda: a.owns() == every, [a], log.timeout_s, "a to own every partition")
        assert a.last("assigned") == every

        b = await log.member(group, [topic], client_id="contract-b").start()

        def split() -> bool:
            return (
                bool(a.owns())
                and bool(b.owns())
                and a.owns() | b.owns() == every
                and not a.owns() & b.owns()
                and a.last("assigned") == a.owns()
                and b.last("assigned") == b.owns()
            )

        await until(split, [a, b], log.timeout_s, "a and b to split the partitions")
        assert len(a.owns()) == len(b.owns()) == 2
        # a gave up what it had before it got its share.
        assert [h for h, _ in a.hooks[-2:]] == ["revoked", "assigned"]
        assert a.hooks[-2][1] == every

        # A partition that moved to b is no longer a's to commit.
        assert a.consumer is not None and b.consumer is not None
        moved = sorted(b.owns())[0]
        with pytest.raises(KafkaError):
            await a.consumer.commit({moved: 0})
        await b.consumer.commit({moved: 0})

        b_share = b.owns()
        a_share = a.owns()
        await b.consumer.stop()
        await until(lambda: a.owns() == every, [a], log.timeout_s, "a to take b's partitions")
        assert a.last("revoked") == a_share
        assert a.last("assigned") == every
        assert b_share <= a.owns()

    async def test_window_reads_records_written_between_two_times(self, log: LogUnderTest) -> None:
        topic, other = await log.topic(2), await log.topic(1)
        for round_ in range(3):
            await log.publisher.publish_many(
                Message(topic, None, v, partition=i % 2)
                for i, v in enumerate(_values(4, f"r{round_}-"))
            )
            await log.publisher.publish(Message(other, None, f"o{round_}".encode(), partition=0))
        consumer = await log.consumer(log.group(), [topic, other])
        records = await read_records(consumer, 15, log.timeout_s)
        stamps = sorted({r.timestamp for r in records})
        assert stamps, "records carry timestamps"
        since_ms = stamps[len(stamps) // 3]
        until_ms = stamps[2 * len(stamps) // 3] if len(stamps) > 2 else stamps[-1] + 1
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        until_ = datetime.fromtimestamp(until_ms / 1000, UTC)

        def expected(lo: int, hi: int | None) -> list[tuple[int, str, int, int, bytes | None]]:
            return sorted(
                (r.timestamp, r.topic, r.partition, r.offset, r.value)
                for r in records
                if r.timestamp >= lo and (hi is None or r.timestamp < hi)
            )

        window = await log.window.read([topic, other], since, until_)
        assert [(c.timestamp_ms, c.topic, c.partition, c.offset, c.value) for c in window] == (
            expected(since_ms, until_ms)
        )
        everything = await log.window.read(
            [topic, other], datetime.fromtimestamp(stamps[0] / 1000, UTC), None
        )
        assert len(everything) == 15
        assert everything == sorted(everything)
        assert await log.window.read([topic], until_ + timedelta(days=1), None) == []

    async def test_a_message_over_the_size_limit_is_refused_and_none_of_its_call_appended(
        self, log: LogUnderTest
    ) -> None:
        topic = await log.topic(1)
        big = b"x" * (MAX_MESSAGE_BYTES + 1)
        fitting = b"y" * (MAX_MESSAGE_BYTES - RECORD_OVERHEAD_BYTES - 100)
        with pytest.raises(MessageTooLarge) as refused:
            await log.publisher.publish_many(
                [
                    Message(topic, b"a", b"small", partition=0),
                    Message(topic, b"b", big, partition=0),
                ]
            )
        assert refused.value.key == b"b" and refused.value.topic == topic
        assert refused.value.size > MAX_MESSAGE_BYTES == refused.value.limit
        assert message_size(Message(topic, b"b", big)) > MAX_MESSAGE_BYTES
        # Nothing of the refused call was appended; a message just within the limit is.
        assert await log.publisher.publish_many([Message(topic, b"c", fitting, partition=0)]) == [
            (0, 0)
        ]


class _TickingClock:
    """Each reading a millisecond after the last: every publish of the
    in-memory log gets its own timestamp."""

    def __init__(self) -> None:
        self._at = datetime(2025, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._at += timedelta(milliseconds=1)
        return self._at

    def monotonic(self) -> float:
        return self._at.timestamp()


class TestMemoryLog(LogContract):
    @pytest.fixture
    async def log(self, broker: MemoryBroker) -> AsyncIterator[LogUnderTest]:
        under_test = LogUnderTest(
            publisher=broker.publisher(),
            consumers=broker.consumer,
            window=broker.window(),
            create=lambda spec: broker.create_topic(spec.name, spec.partitions),
            prefix="",
            timeout_s=5.0,
        )
        yield under_test
        await under_test.close()

    @pytest.fixture
    def broker(self) -> MemoryBroker:
        return MemoryBroker(clock=_TickingClock(), session_timeout_s=0.2)

    # What only the in-memory log can be made to show quickly.

    async def test_a_crashed_member_holds_its_partitions_until_its_session_times_out(
        self, log: LogUnderTest, broker: MemoryBroker
    ) -> None:
        topic = await log.topic(2)
        group = log.group()
        a = await log.member(group, [topic], client_id="a").start()
        b = await log.member(group, [topic], client_id="b").start()
        every = frozenset(TopicPartition(topic, p) for p in range(2))
        await until(lambda: len(a.owns()) == len(b.owns()) == 1, [a, b], log.timeout_s, "a split")
        crashed = next(c for c in broker.consumers if c.member_id.startswith("b-"))
        crashed.crash()
        await crashed.stop()  # a dead process's finally: no leave
        assert len(broker.members(group)) == 2
        with pytest.raises(MemberCrashed):
            await crashed.next_batch(timeout_ms=10, max_records=1)
        loop = asyncio.get_running_loop()
        crashed_at = loop.time()
        await until(lambda: a.owns() == every, [a], log.timeout_s, "a to take b's partition")
        assert loop.time() - crashed_at >= broker.session_timeout_s
        assert broker.members(group) == [next(c.member_id for c in broker.consumers)]

    async def test_a_member_that_rejoined_can_no_longer_commit_its_old_partitions(
        self, broker: MemoryBroker
    ) -> None:
        held = asyncio.Event()
        release = asyncio.Event()

        async def pause(what: str) -> None:
            if what.startswith("rejoin a-") and not release.is_set():
                held.set()
                await release.wait()

        broker.pause = pause
        broker.create_topic("t", 2)
        a = broker.consumer("g", ["t"], client_id="a")
        await a.start()
        tp = TopicPartition("t", 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not a.assignment():
            assert loop.time() < deadline
            release.set()
            await a.next_batch(timeout_ms=50, max_records=1)
        release.clear()
        held.clear()
        await a.commit({tp: 0})
        b = broker.consumer("g", ["t"], client_id="b")
        await b.start()
        await asyncio.wait_for(held.wait(), 5)
        # a ran its revoke and rejoined; the group has not settled yet.
        with pytest.raises(CommitFailedError):
            await a.commit({tp: 1})
        assert broker.committed("g", tp) == 0
        release.set()
        await a.stop()
        await b.stop()

    async def test_a_batch_waits_on_the_loop_for_a_record(self, broker: MemoryBroker) -> None:
        broker.create_topic("t", 1)
        consumer = broker.consumer("g", ["t"])
        await consumer.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not consumer.assignment():
            assert loop.time() < deadline
            await consumer.next_batch(timeout_ms=20, max_records=1)
        waiting = asyncio.ensure_future(consumer.next_batch(timeout_ms=60_000, max_records=5))
        await asyncio.sleep(0)
        assert not waiting.done()
        await broker.publisher().publish(Message("t", b"k", b"v"))
        batch = await asyncio.wait_for(waiting, 5)
        assert [r.value for r in batch[TopicPartition("t", 0)]] == [b"v"]
        await consumer.stop()

    async def test_every_call_pauses_and_a_crash_before_the_append_writes_nothing(
        self, broker: MemoryBroker
    ) -> None:
        seen: list[str] = []

        class Crash(Exception):
            pass

        async def pause(what: str) -> None:
            seen.append(what)
            if what == "publish t":
                raise Crash

        broker.pause = pause
        broker.create_topic("t", 1)
        with pytest.raises(Crash):
            await broker.publisher().publish(Message("t", None, b"lost"))
        assert broker.records("t") == []
        broker.pause = None
        await broker.publisher().publish(Message("t", None, b"kept"))
        assert [r.value for r in broker.records("t")] == [b"kept"]
        assert seen == ["publish t"]


@pytest.mark.integration
class TestKafkaLog(LogContract):
    @pytest.fixture
    async def log(self, infra: InfraEndpoints) -> AsyncIterator[LogUnderTest]:
        bootstrap = KafkaConnection(infra.kafka_bootstrap_servers)
        prefix = f"t{uuid.uuid4().hex[:10]}."
        publisher = KafkaPublisher(bootstrap, client_id="tablesync-contract")
        await publisher.start()
        under_test = LogUnderTest(
            publisher=publisher,
            consumers=KafkaConsumers(bootstrap),
            window=KafkaWindow(bootstrap),
            create=lambda spec: asyncio.ensure_future(ensure_topics(bootstrap, [spec])),
            prefix=prefix,
            timeout_s=30.0,
        )
        try:
            yield under_test
        finally:
            await under_test.close()
            await publisher.stop()
            await delete_topics(bootstrap, prefix)
