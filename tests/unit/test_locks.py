"""Holding sets of keys side by side, as apply's partitions hold coupled pairs."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.runtime.locks import KeyedLocks

# Strings, as the records' keys are: a set of them iterates in no fixed order.
_sets = st.lists(
    st.sets(st.sampled_from([f"bc:{n}" for n in range(6)]), min_size=1, max_size=4),
    min_size=2,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_sets)
def test_holders_of_overlapping_keys_never_overlap_and_never_deadlock(
    wanted: list[set[str]],
) -> None:
    async def run() -> None:
        locks: KeyedLocks[str] = KeyedLocks()
        inside: set[str] = set()

        async def holder(keys: set[str]) -> None:
            await locks.acquire(keys)
            try:
                assert not (inside & keys), (inside, keys)
                inside.update(keys)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                inside.difference_update(keys)
            finally:
                locks.release(keys)

        await asyncio.wait_for(asyncio.gather(*(holder(k) for k in wanted)), timeout=5)
        assert locks.held() == 0

    asyncio.run(run())


def test_a_holder_cancelled_while_waiting_takes_nothing() -> None:
    async def run() -> None:
        locks: KeyedLocks[str] = KeyedLocks()
        await locks.acquire({"b"})
        waiting = asyncio.create_task(locks.acquire({"a", "b"}))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # "a" was taken before the wait on "b": given back with the cancellation.
        await asyncio.wait_for(locks.acquire({"a"}), timeout=1)
        locks.release({"a", "b"})
        assert locks.held() == 0

    asyncio.run(run())
