"""Capture of one side and the coordinator are singletons: a second process
waits as a standby instead of doing the work twice, and takes over when the
holder is gone. On virtual time, with the real services on in-memory ports."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tablesync.adapters.avro import Codec
from tablesync.adapters.memory import MemoryDatabase, MemorySingleton, memory_stores
from tablesync.adapters.memory.log import MemoryBroker
from tablesync.composition import topic_specs, topics_for
from tablesync.core.events import RecordChanged
from tablesync.emulators.memory import MemorySide
from tablesync.ports.state import StateStores
from tablesync.runtime.capture import CaptureService
from tablesync.runtime.lease import VALID_SHARE
from tablesync.settings import Settings
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.leases import Cuttable
from tests.simulation.sim import SimClock
from tests.simulation.vloop import VirtualLoop
from tests.simulation.world import sim_settings

T = TypeVar("T")

CUSTOMERS = "customers"


def on_virtual_time(body: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(body())
    finally:
        loop.close()


def now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class Deployment:
    settings: Settings
    database: MemoryDatabase
    stores: StateStores
    broker: MemoryBroker
    side: MemorySide
    codec: Codec

    def capture(self, singleton: Any) -> CaptureService:
        clock = SimClock()
        return CaptureService(
            self.settings,
            "bc",
            stores=self.stores,
            api=self.side,
            publisher=self.broker.publisher(),
            consumers=self.broker.consumer,
            codec=self.codec,
            clock=clock,
            topics=topics_for(self.settings),
            singleton=singleton,
        )

    def lease(self) -> MemorySingleton:
        return MemorySingleton(self.database, "capture.bc", ttl_s=self.settings.sync.lease_ttl_s)

    def events_of(self, record_id: str) -> list[RecordChanged]:
        topic = topics_for(self.settings).cdc("bc", CUSTOMERS)
        found = []
        for record in self.broker.records(topic):
            event = self.codec.decode(record.value or b"")
            if isinstance(event, RecordChanged) and event.record_id == record_id:
                found.append(event)
        return found

    async def until(self, condition: Callable[[], bool], *, within_s: float) -> float:
        deadline = now() + within_s
        while not condition():
            assert now() < deadline, "the condition did not come true in time"
            await asyncio.sleep(0.05)
        return now()


async def deployment() -> Deployment:
    clock = SimClock()
    settings = sim_settings()
    database = MemoryDatabase(clock)
    stores = memory_stores(database)
    document = {"mappings": {"CUSTOMER": copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])}}
    mappings = await stores.mappings.replace_all(document)
    broker = MemoryBroker(clock=clock)
    broker.ensure_topics(topic_specs(topics_for(settings), mappings))
    return Deployment(settings, database, stores, broker, MemorySide("bc", clock), Codec())


def test_two_captures_of_one_side_publish_each_change_once() -> None:
    async def body() -> None:
        d = await deployment()
        stop = asyncio.Event()
        first, second = d.capture(d.lease()), d.capture(d.lease())
        tasks = [asyncio.ensure_future(c.run(stop)) for c in (first, second)]
        await d.until(lambda: ("bc", CUSTOMERS) in d.database.t.checkpoints, within_s=30)
        rows = [d.side.user_create(CUSTOMERS, {"displayName": f"Customer {n}"}) for n in range(3)]
        await d.until(lambda: all(d.events_of(r.id) for r in rows), within_s=30)
        # Many polls later, still once each.
        await asyncio.sleep(20 * d.settings.sync.poll_interval_s)
        stop.set()
        await asyncio.gather(*tasks)

        assert [len(d.events_of(r.id)) for r in rows] == [1, 1, 1]
        assert sorted([first.lease.holds, second.lease.holds]) == [0, 1]

    on_virtual_time(body)


def test_a_standby_capture_takes_over_from_one_cut_off_within_the_bound() -> None:
    async def body() -> None:
        d = await deployment()
        ttl, renew = d.settings.sync.lease_ttl_s, d.settings.sync.lease_renew_s
        stop = asyncio.Event()
        cut = Cuttable(d.lease())
        holder = d.capture(cut)
        tasks = [asyncio.ensure_future(holder.run(stop))]
        await d.until(lambda: holder.lease.held, within_s=5)
        standby = d.capture(d.lease())
        tasks.append(asyncio.ensure_future(standby.run(stop)))
        before = d.side.user_create(CUSTOMERS, {"displayName": "Before"})
        await d.until(lambda: bool(d.events_of(before.id)), within_s=30)

        cut.cut = True
        last_renewal = cut.renewed[-1]
        stopped = await d.until(lambda: not holder.lease.held, within_s=ttl)
        took_over = await d.until(lambda: standby.lease.held, within_s=ttl + renew)
        after = d.side.user_create(CUSTOMERS, {"displayName": "After"})
        await d.until(lambda: bool(d.events_of(after.id)), within_s=30)
        stop.set()
        await asyncio.gather(*tasks)

        assert stopped <= last_renewal + VALID_SHARE * ttl + 0.05
        assert took_over <= last_renewal + ttl + renew + 0.05
        assert stopped < took_over
        # (The new holder reads again from the stored checkpoint, its overlap
        # included, as a restarted capture does: ``before`` may come twice.)
        assert len(d.events_of(after.id)) == 1

    on_virtual_time(body)
