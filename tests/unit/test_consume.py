"""The consume → process → commit loop on the in-memory log: committing is
the last step, a stop finishes or abandons the step in hand, a revoke waits
for the batch in flight, an assignment resumes from the stored positions and
commits them, and a committed offset never goes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiokafka.errors import CommitFailedError, KafkaConnectionError

from tablesync.adapters.memory.log import MemoryBroker
from tablesync.errors import Fenced, GaveWay
from tablesync.ports.clock import SystemClock
from tablesync.ports.log import Message, TopicPartition
from tablesync.runtime.consume import (
    Batch,
    ConsumeLoop,
    Process,
    Resume,
    Subscription,
    next_offsets,
)

GROUP = "g"
TOPIC = "t"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _loop(
    broker: MemoryBroker,
    process: Process,
    *,
    client_id: str = "a",
    resume: Resume | None = None,
    **kwargs: object,
) -> ConsumeLoop:
    return ConsumeLoop(
        broker.consumer,
        Subscription(GROUP, (TOPIC,), client_id=client_id, max_records=100, wait_ms=20),
        process,
        what=f"test {client_id}",
        clock=SystemClock(),
        resume=resume,
        backoff_s=(0.01,),
        **kwargs,  # type: ignore[arg-type]
    )


async def _publish(broker: MemoryBroker, partition: int, count: int) -> None:
    await broker.publisher().publish_many(
        Message(TOPIC, None, f"{partition}-{i}".encode(), partition=partition) for i in range(count)
    )


def _broker(partitions: int = 1) -> MemoryBroker:
    broker = MemoryBroker(session_timeout_s=0.2)
    broker.create_topic(TOPIC, partitions)
    return broker


async def test_commit_is_the_last_step_and_a_transient_failure_retries_the_batch() -> None:
    broker = _broker()
    await _publish(broker, 0, 3)
    attempts: list[list[int]] = []
    committed_during: list[int | None] = []

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        attempts.append([r.offset for r in batch[P0]])
        committed_during.append(broker.committed(GROUP, P0))
        if len(attempts) == 1:
            raise OSError("the side went away")
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await eventually(lambda: broker.committed(GROUP, P0) == 3, "the batch's commit")
    stop.set()
    await task
    assert attempts == [[0, 1, 2], [0, 1, 2]]
    assert committed_during == [None, None]
    assert broker.members(GROUP) == []


async def test_a_stop_finishes_the_batch_in_hand_then_commits_and_closes() -> None:
    broker = _broker()
    await _publish(broker, 0, 2)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        entered.set()
        await gate.wait()
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    stop.set()
    assert broker.members(GROUP), "the member stays while its batch runs"
    gate.set()
    await asyncio.wait_for(task, 5)
    assert broker.committed(GROUP, P0) == 2
    assert broker.members(GROUP) == []


async def test_a_stop_while_a_batch_is_retried_commits_nothing() -> None:
    broker = _broker()
    await _publish(broker, 0, 2)
    tries = 0

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        nonlocal tries
        tries += 1
        raise OSError("still away")

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await eventually(lambda: tries >= 2, "a retry")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert broker.committed(GROUP, P0) is None
    assert broker.members(GROUP) == []


async def test_a_processing_cut_short_by_a_stop_commits_nothing() -> None:
    broker = _broker()
    await _publish(broker, 0, 2)
    stop = asyncio.Event()

    async def process(batch: Batch) -> Mapping[TopicPartition, int] | None:
        stop.set()
        return None

    await asyncio.wait_for(_loop(broker, process).run(stop), 5)
    assert broker.committed(GROUP, P0) is None


async def test_a_revoke_waits_for_the_batch_in_flight_and_its_commit() -> None:
    broker = _broker(partitions=2)
    await _publish(broker, 0, 3)
    await _publish(broker, 1, 4)
    entered, gate = asyncio.Event(), asyncio.Event()
    seen: list[tuple[TopicPartition, int]] = []

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        seen.extend((tp, r.offset) for tp, records in batch.items() for r in records)
        entered.set()
        await gate.wait()
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    assert sorted(seen) == [(P0, o) for o in range(3)] + [(P1, o) for o in range(4)]

    other = broker.consumer(GROUP, [TOPIC], client_id="b")
    await other.start()
    # The rebalance waits for a's revoke, which waits for a's batch.
    assert await other.next_batch(timeout_ms=100, max_records=10) == {}
    assert other.assignment() == frozenset()
    gate.set()
    await eventually(lambda: bool(other.assignment()), "b's share")
    assert broker.committed(GROUP, P0) == 3
    assert broker.committed(GROUP, P1) == 4
    # b resumes after a's batch: nothing of it comes again.
    assert await other.next_batch(timeout_ms=100, max_records=10) == {}
    stop.set()
    await asyncio.wait_for(task, 5)
    await other.stop()


async def test_an_assignment_resumes_from_the_stored_position_and_commits_it() -> None:
    broker = _broker(partitions=2)
    await _publish(broker, 0, 5)
    await _publish(broker, 1, 2)
    stored = {P0: 3, P1: 2}  # effects stored, offsets never committed: a crash between
    read: list[tuple[TopicPartition, int]] = []

    async def resume(assigned: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {tp: stored[tp] for tp in assigned}

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        read.extend((tp, r.offset) for tp, records in batch.items() for r in records)
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process, resume=resume).run(stop))
    await eventually(lambda: broker.committed(GROUP, P0) == 5, "the batch after the resume")
    # A partition with nothing past its stored position is committed there too.
    await eventually(lambda: broker.committed(GROUP, P1) == 2, "the stored position's commit")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert read == [(P0, 3), (P0, 4)]


async def test_a_position_resumed_from_never_commits_below_what_was_committed() -> None:
    broker = _broker()
    await _publish(broker, 0, 5)
    history: list[int | None] = []

    async def pause(what: str) -> None:
        if what.startswith("committed a-"):
            history.append(broker.committed(GROUP, P0))

    broker.pause = pause

    async def resume(assigned: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
        return dict.fromkeys(assigned, 1)  # a store that fell behind

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process, resume=resume).run(stop))
    await eventually(lambda: broker.committed(GROUP, P0) == 5, "the first batch")
    # A member coming and going makes the loop resume again, from 1.
    other = broker.consumer(GROUP, [TOPIC], client_id="b")
    await other.start()
    await eventually(lambda: len(broker.members(GROUP)) == 2, "b to join")
    await other.stop()
    before = len(history)
    await eventually(lambda: len(history) > before, "a commit after the rebalance")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert history[0] is not None
    assert None not in history
    assert history == sorted(history), history  # type: ignore[type-var]
    assert broker.committed(GROUP, P0) == 5


async def test_idle_steps_run_between_batches_at_most_once_per_interval() -> None:
    broker = _broker()
    runs: list[str] = []
    failed_once = False

    async def retries() -> None:
        nonlocal failed_once
        if not failed_once:
            failed_once = True
            raise OSError("the database restarts")
        runs.append("retries")

    async def intents() -> None:
        runs.append("intents")

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        return next_offsets(batch)

    stop = asyncio.Event()
    loop = _loop(
        broker,
        process,
        idle=(("retries", retries), ("intents", intents)),
        idle_every_s=3600.0,
    )
    task = asyncio.create_task(loop.run(stop))
    await eventually(lambda: runs == ["retries", "intents"], "one round of idle steps")
    await _publish(broker, 0, 2)
    await eventually(lambda: broker.committed(GROUP, P0) == 2, "a batch after them")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert runs == ["retries", "intents"]


async def test_a_commit_failing_until_the_member_rejoins_does_not_hold_its_revoke() -> None:
    broker = _broker(partitions=2)
    await _publish(broker, 0, 3)
    await _publish(broker, 1, 4)
    entered, gate = asyncio.Event(), asyncio.Event()
    other = broker.consumer(GROUP, [TOPIC], client_id="b")
    failures = 0

    async def pause(what: str) -> None:
        nonlocal failures
        # As on a broker that dropped the member: no commit of a's succeeds
        # until it has rejoined, which waits for its revoke.
        if what.startswith("commit a-") and gate.is_set() and not other.assignment():
            failures += 1
            raise CommitFailedError("the group rebalanced")

    broker.pause = pause

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        entered.set()
        await gate.wait()
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    await other.start()
    gate.set()
    await eventually(lambda: bool(other.assignment()), "b's share")
    # a's retry commits only what a still owns; b reads its share again.
    await eventually(lambda: broker.committed(GROUP, P0) == 3, "a's retried commit")
    assert failures >= 1
    assert broker.committed(GROUP, P1) is None
    again = await other.next_batch(timeout_ms=500, max_records=10)
    assert [r.offset for r in again[P1]] == [0, 1, 2, 3]
    stop.set()
    await asyncio.wait_for(task, 5)
    await other.stop()


async def test_a_fenced_batch_is_dropped_and_what_is_still_owned_read_again() -> None:
    broker = _broker()
    await _publish(broker, 0, 3)
    seen: list[list[int]] = []

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        seen.append([r.offset for r in batch[P0]])
        if len(seen) == 1:
            raise Fenced("CUSTOMER", [(TOPIC, 0)])
        return next_offsets(batch)

    stop = asyncio.Event()
    task = asyncio.create_task(_loop(broker, process).run(stop))
    await eventually(lambda: broker.committed(GROUP, P0) == 3, "the batch read again")
    stop.set()
    await task
    # Dropped, not retried as it stood nor committed; read again from its start.
    assert seen == [[0, 1, 2], [0, 1, 2]]


async def test_a_batch_that_gives_way_lets_the_revoke_through_uncommitted() -> None:
    """A batch waiting on something another member holds gives way once a
    revoke waits for it (``revoking``): the rebalance goes on, nothing of the
    batch is committed, and its partitions' new owners read it again."""
    broker = _broker(partitions=2)
    await _publish(broker, 0, 3)
    await _publish(broker, 1, 2)
    entered = asyncio.Event()
    first_seen: list[tuple[TopicPartition, int]] = []
    loops: list[ConsumeLoop] = []

    async def held(batch: Batch) -> Mapping[TopicPartition, int]:
        first_seen.extend((tp, r.offset) for tp, records in batch.items() for r in records)
        entered.set()
        # What another member holds, and never lets go of here.
        await loops[0].revoking.wait()
        raise GaveWay("CUSTOMER", sum(len(r) for r in batch.values()))

    second_seen: list[tuple[TopicPartition, int]] = []

    async def fine(batch: Batch) -> Mapping[TopicPartition, int]:
        second_seen.extend((tp, r.offset) for tp, records in batch.items() for r in records)
        return next_offsets(batch)

    stop = asyncio.Event()
    loops.append(_loop(broker, held))
    first = asyncio.create_task(loops[0].run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    assert not loops[0].revoking.is_set()
    second = asyncio.create_task(_loop(broker, fine, client_id="b").run(stop))
    # The second member gets its share and reads it from the start: the
    # first one's batch was dropped, not committed.
    await eventually(lambda: len(second_seen) >= 2, "b's share read")
    owned_by_b = {tp for tp, _ in second_seen}
    assert len(owned_by_b) == 1
    (tp_b,) = owned_by_b
    published = len(broker.records(TOPIC, tp_b.partition))
    assert sorted(o for tp, o in second_seen if tp == tp_b) == list(range(published))
    assert not loops[0].revoking.is_set()
    stop.set()
    await asyncio.gather(first, second)
    # What the first member kept, it never committed: each batch gave way.
    (tp_a,) = {P0, P1} - owned_by_b
    assert broker.committed(GROUP, tp_a) is None


async def test_a_broker_away_when_the_loop_starts_is_waited_for() -> None:
    """Fault suite (two captures per side): a standby took its side's lease
    while the broker was stopped, and its consumer's start ended the process
    (``KafkaConnectionError: Unable to bootstrap``)."""
    broker = _broker()
    await _publish(broker, 0, 2)
    refused: list[int] = []

    def consumers(*args: object, **kwargs: object) -> object:
        consumer = broker.consumer(*args, **kwargs)  # type: ignore[arg-type]
        start = consumer.start

        async def away() -> None:
            if len(refused) < 2:
                refused.append(1)
                raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
            await start()

        consumer.start = away  # type: ignore[method-assign]
        return consumer

    async def process(batch: Batch) -> Mapping[TopicPartition, int]:
        return next_offsets(batch)

    loop = ConsumeLoop(
        consumers,  # type: ignore[arg-type]
        Subscription(GROUP, (TOPIC,), client_id="a", max_records=100, wait_ms=20),
        process,
        what="test a",
        clock=SystemClock(),
        backoff_s=(0.01,),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await eventually(lambda: broker.committed(GROUP, P0) == 2, "the batch's commit")
    assert not task.done() and len(refused) == 2
    stop.set()
    await task
