"""A singleton's work runs only while its lease is held (``runtime.lease``),
shown on virtual time: a holder cut off from the database stops within
``VALID_SHARE * ttl`` of its last renewal, a standby takes over within
``ttl + renew`` of it (``renew`` after a release), and two holders never
work at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tablesync.adapters.memory import MemoryDatabase, MemorySingleton
from tablesync.errors import LeaseLost
from tablesync.ports.log import Message
from tablesync.runtime.lease import VALID_SHARE, Lease, LeasedPublisher
from tests.leases import Cuttable, Shift, never_together, now, working
from tests.simulation.sim import SimClock
from tests.simulation.vloop import VirtualLoop

T = TypeVar("T")

TTL_S = 10.0
RENEW_S = 2.0


def on_virtual_time(body: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(body())
    finally:
        loop.close()


def lease_of(singleton: Cuttable | MemorySingleton, what: str) -> Lease:
    return Lease(singleton, what=what, clock=SimClock(), renew_s=RENEW_S)


def test_a_holder_cut_off_stops_and_a_standby_takes_over_within_the_bounds() -> None:
    async def body() -> None:
        database = MemoryDatabase(SimClock())
        first = Cuttable(MemorySingleton(database, "coordinator", ttl_s=TTL_S))
        second = MemorySingleton(database, "coordinator", ttl_s=TTL_S)
        shifts: list[Shift] = []
        stop = asyncio.Event()
        a = asyncio.ensure_future(lease_of(first, "a").serve(stop, working("a", shifts)))
        await asyncio.sleep(0.1)
        b = asyncio.ensure_future(lease_of(second, "b").serve(stop, working("b", shifts)))
        await asyncio.sleep(31.0)
        assert [s.holder for s in shifts] == ["a"]
        first.cut = True
        last_renewal = first.renewed[-1]
        await asyncio.sleep(60.0)
        stop.set()
        await asyncio.gather(a, b)

        assert [s.holder for s in shifts] == ["a", "b"]
        held, took_over = shifts
        assert held.ended is not None
        assert held.ended <= last_renewal + VALID_SHARE * TTL_S + 1e-6
        assert took_over.began <= last_renewal + TTL_S + RENEW_S + 1e-6
        never_together(shifts)

    on_virtual_time(body)


def test_a_standby_takes_over_from_a_holder_that_stops_within_one_renewal() -> None:
    async def body() -> None:
        database = MemoryDatabase(SimClock())
        shifts: list[Shift] = []
        stop_first, stop_all = asyncio.Event(), asyncio.Event()
        first = lease_of(MemorySingleton(database, "capture.bc", ttl_s=TTL_S), "a")
        second = lease_of(MemorySingleton(database, "capture.bc", ttl_s=TTL_S), "b")
        a = asyncio.ensure_future(first.serve(stop_first, working("a", shifts)))
        await asyncio.sleep(0.1)
        b = asyncio.ensure_future(second.serve(stop_all, working("b", shifts)))
        await asyncio.sleep(20.0)
        stop_first.set()
        await a
        stopped = now()
        await asyncio.sleep(10.0)
        stop_all.set()
        await b

        assert [s.holder for s in shifts] == ["a", "b"]
        assert shifts[1].began <= stopped + RENEW_S + 1e-6
        never_together(shifts)

    on_virtual_time(body)


def test_a_holder_frozen_past_its_lease_stops_on_waking_before_any_side_effect() -> None:
    """A process frozen past its lease (a VM paused, SIGSTOP) wakes up with
    another holder in its place: its work stops at once, and whatever of it
    runs before the watchdog does publishes nothing."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        database = MemoryDatabase(SimClock())
        shifts: list[Shift] = []
        published: list[float] = []
        stop = asyncio.Event()
        recorded = Cuttable(MemorySingleton(database, "coordinator", ttl_s=TTL_S))
        lease = lease_of(recorded, "a")
        publisher = LeasedPublisher(_Log(published), lease)

        async def publish_forever(stop: asyncio.Event) -> None:
            shift = Shift("a", now())
            shifts.append(shift)
            try:
                while not stop.is_set():
                    await publisher.publish(Message("t", None, b""))
                    await asyncio.sleep(0.3)
            finally:
                shift.ended = now()

        a = asyncio.ensure_future(lease.serve(stop, publish_forever))
        await asyncio.sleep(5.0)
        last_renewal = recorded.renewed[-1]
        loop.advance(30.0)  # frozen: time passes, nothing of the process runs
        woke = now()
        # Meanwhile a standby took the lease over (nothing yields in between).
        other = MemorySingleton(database, "coordinator", ttl_s=TTL_S)
        assert await other.try_hold() is not None
        await asyncio.sleep(60.0)
        stop.set()
        await a

        # Back as a standby: it took the lease again once the other's expired.
        assert len(shifts) == 2 and shifts[1].began >= woke + TTL_S
        assert shifts[0].ended == woke
        valid_until = last_renewal + VALID_SHARE * TTL_S
        assert published
        assert not [t for t in published if valid_until <= t < shifts[1].began]
        never_together(shifts)

    on_virtual_time(body)


def test_a_side_effect_after_the_lease_ended_is_refused() -> None:
    async def body() -> None:
        database = MemoryDatabase(SimClock())
        lease = lease_of(MemorySingleton(database, "coordinator", ttl_s=TTL_S), "a")
        publisher = LeasedPublisher(_Log([]), lease)
        with pytest.raises(LeaseLost, match="a: the lease is no longer held"):
            await publisher.publish(Message("t", None, b""))

    on_virtual_time(body)


def test_a_lease_renewed_too_rarely_for_its_time_to_live_is_refused() -> None:
    database = MemoryDatabase(SimClock())
    with pytest.raises(ValueError, match=r"renewed every 9\.0 s"):
        Lease(
            MemorySingleton(database, "coordinator", ttl_s=TTL_S),
            what="coordinator",
            clock=SimClock(),
            renew_s=9.0,
        )


class _Log:
    def __init__(self, published: list[float]) -> None:
        self.published = published

    async def publish(self, message: Message) -> tuple[int, int]:
        self.published.append(now())
        return (0, len(self.published))

    async def publish_many(self, messages: object) -> list[tuple[int, int]]:
        raise NotImplementedError

    async def partitions_for(self, topic: str) -> list[int]:
        return [0]
