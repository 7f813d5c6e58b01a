"""A capture of BC's customers on in-memory ports and virtual time: what the
capture tests share."""

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
from tablesync.emulators.memory.side import DEFAULT_PAGE_SIZE
from tablesync.ports.log import MAX_MESSAGE_BYTES, Publisher
from tablesync.ports.state import StateStores
from tablesync.runtime.capture import CaptureService
from tablesync.settings import Settings
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.simulation.sim import SimClock
from tests.simulation.vloop import VirtualLoop
from tests.simulation.world import sim_settings

__all__ = ["CUSTOMERS", "Deployment", "deployment", "now", "on_virtual_time"]

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

    def capture(self, singleton: Any = None, publisher: Publisher | None = None) -> CaptureService:
        clock = SimClock()
        return CaptureService(
            self.settings,
            "bc",
            stores=self.stores,
            api=self.side,
            publisher=publisher or self.broker.publisher(),
            consumers=self.broker.consumer,
            codec=self.codec,
            clock=clock,
            topics=topics_for(self.settings),
            singleton=singleton or self.lease(),
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


async def deployment(
    *, page_size: int = DEFAULT_PAGE_SIZE, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> Deployment:
    clock = SimClock()
    settings = sim_settings()
    database = MemoryDatabase(clock)
    stores = memory_stores(database)
    document = {"mappings": {"CUSTOMER": copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])}}
    mappings = await stores.mappings.replace_all(document)
    broker = MemoryBroker(clock=clock, max_message_bytes=max_message_bytes)
    broker.ensure_topics(topic_specs(topics_for(settings), mappings))
    side = MemorySide("bc", clock, page_size=page_size)
    return Deployment(settings, database, stores, broker, side, Codec())
