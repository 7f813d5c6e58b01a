"""The epochs an apply instance holds its partitions under, when two of its
own takes of one partition overlap: the assignment's take (run by the
consumer's rebalance, beside the batches) and the take of a batch read
before that one answered. On in-memory ports."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tablesync.adapters.memory.log import MemoryRecord
from tablesync.ports.log import TopicPartition
from tablesync.ports.state import ApplyState
from tests.capturing import on_virtual_time
from tests.mempipeline import pipeline


class _SlowFirstAnswer:
    """The state store, whose first take of epochs is made at once and
    answered only once ``answer`` is set: a reply still on its way."""

    def __init__(self, inner: ApplyState) -> None:
        self._inner = inner
        self.answer = asyncio.Event()
        self.made = asyncio.Event()
        self._first = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def take_epochs(
        self, mapping: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        taken = await self._inner.take_epochs(mapping, partitions)
        if self._first:
            self._first = False
            self.made.set()
            await self.answer.wait()
        return taken


def test_an_assignment_answered_after_a_batch_took_its_partition_keeps_the_later_epoch() -> None:
    """A run's first step never finished: a batch read right after the
    assignment took its partitions (epoch 2) while the assignment's own take
    (epoch 1) was on its way; that answer, kept last, left the instance
    holding epoch 1, and each of its batches on those partitions was fenced
    off from then on, by itself."""

    async def body() -> None:
        p = await pipeline()
        service = p.apply()
        service._applier = p.applier()
        state = _SlowFirstAnswer(p.stores.apply_state)
        service.state = state  # type: ignore[assignment]
        topic = p.topics.cdc("bc", "customers")
        tp = TopicPartition(topic, 0)
        bc = p.sides["bc"]

        def record(offset: int) -> MemoryRecord:
            row = bc.user_create(
                "customers", {"displayName": f"c{offset}", "number": f"C{offset}", "blocked": " "}
            )
            return MemoryRecord(topic, 0, offset, None, p.item(row, offset).raw, 0)

        assigned = asyncio.create_task(service._resume(frozenset({tp})))
        await state.made.wait()
        assert await service._process({tp: [record(0)]}) == {tp: 1}
        state.answer.set()
        await assigned

        assert await service._process({tp: [record(1)]}) == {tp: 2}

    on_virtual_time(body)
