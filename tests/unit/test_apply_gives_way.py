"""A batch waiting for records another apply instance holds gives way to a
rebalance of its group: the holder may be the frozen instance the rebalance
is about, which would otherwise keep its partitions for as long as it stays
frozen. On in-memory ports, on virtual time."""

from __future__ import annotations

import asyncio

from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.ports.log import Message, TopicPartition
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline, until


def test_a_batch_waiting_for_a_frozen_holders_records_lets_its_group_rebalance() -> None:
    """Fault-suite seed 1065213687: an instance was frozen while it held the
    records of a batch, and the other instance's batch needed one of them (the
    echo of the frozen one's own write). The waiting batch held up its revoke,
    the revoke held up the rebalance, and the group moved nothing for as long
    as the holder stayed frozen."""

    async def body() -> None:
        p = await pipeline()
        wait_s = p.settings.sync.claim_wait_s
        customer = p.sides["bc"].user_create(
            "customers", {"number": "C-1", "displayName": "Contoso", "blocked": " "}
        )
        frozen = MemoryPairClaims(p.database)
        await frozen.take(CUSTOMER, {("bc", customer.id)}, wait_s=1.0)
        topic = p.topics.cdc("bc", "customers")
        await p.broker.publisher().publish_many(
            [Message(topic, customer.id.encode(), p.item(customer, 0).raw, partition=0)]
        )

        first = p.apply()
        first_given: list[frozenset[TopicPartition]] = []
        second = p.apply()
        second_given: list[frozenset[TopicPartition]] = []
        for service, given in ((first, first_given), (second, second_given)):
            resume = service._resume

            async def recorded(
                assigned: frozenset[TopicPartition],
                resume: object = resume,
                given: list[frozenset[TopicPartition]] = given,
            ) -> dict[TopicPartition, int]:
                given.append(assigned)
                return await resume(assigned)  # type: ignore[operator,no-any-return]

            service._resume = recorded  # type: ignore[method-assign]

        stop = asyncio.Event()
        running = [asyncio.ensure_future(first.run(stop))]
        await until(lambda: bool(first_given), within_s=10)
        # The first instance's batch now waits for the held record.
        await asyncio.sleep(1.0)
        assert not p.accounts()
        running.append(asyncio.ensure_future(second.run(stop)))
        # Well within one wait for the record: the rebalance does not wait
        # for it to end.
        await until(lambda: bool(second_given), within_s=wait_s / 3)
        assert not any(task.done() for task in running)

        frozen.drop()
        await until(lambda: "C-1" in p.accounts(), within_s=wait_s * 2)
        stop.set()
        await asyncio.gather(*running)

    on_virtual_time(body)
