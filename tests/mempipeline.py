"""Capture and apply of the CUSTOMER mapping on in-memory ports (state,
log, both sides): what the tests that run them on virtual time share."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tablesync.adapters.avro import Codec
from tablesync.adapters.memory import MemoryDatabase, MemorySingleton, memory_stores
from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.adapters.memory.log import MemoryBroker
from tablesync.composition import topic_specs, topics_for
from tablesync.core.events import RecordChanged, Side
from tablesync.core.plan import JobContext
from tablesync.core.records import Row
from tablesync.core.topics import Topics
from tablesync.emulators.memory import MemorySide
from tablesync.ports.log import TopicPartition
from tablesync.ports.state import StateStores
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tablesync.runtime.apply import ApplyService
from tablesync.runtime.capture import CaptureService
from tablesync.settings import Settings
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.simulation.sim import SimClock
from tests.simulation.world import sim_settings

__all__ = ["CUSTOMER", "Pipeline", "pipeline", "until"]

CUSTOMER = "CUSTOMER"
_TABLES: dict[Side, str] = {"bc": "customers", "dataverse": "accounts"}


@dataclass
class Pipeline:
    settings: Settings
    database: MemoryDatabase
    stores: StateStores
    broker: MemoryBroker
    sides: dict[Side, MemorySide]
    topics: Topics
    codec: Codec
    clock: SimClock

    def capture(self, side: Side) -> CaptureService:
        return CaptureService(
            self.settings,
            side,
            stores=self.stores,
            api=self.sides[side],
            publisher=self.broker.publisher(),
            consumers=self.broker.consumer,
            codec=self.codec,
            clock=self.clock,
            topics=self.topics,
            singleton=MemorySingleton(
                self.database, f"capture.{side}", ttl_s=self.settings.sync.lease_ttl_s
            ),
        )

    def apply(self) -> ApplyService:
        return ApplyService(
            self.settings,
            CUSTOMER,
            stores=self.stores,
            apis=dict(self.sides),
            publisher=self.broker.publisher(),
            consumers=self.broker.consumer,
            codec=self.codec,
            clock=self.clock,
            topics=self.topics,
            claims=MemoryPairClaims(self.database),
        )

    def applier(self) -> Applier:
        async def ensure(job_id: str, mapping: str, direction: str, start: Any) -> None:
            await self.stores.jobs.continuous_job(job_id, mapping, direction, start)

        return Applier(
            CUSTOMER,
            self._mappings,
            dict(self.sides),  # type: ignore[arg-type]
            self.stores.couplings,
            self.stores.apply_state,
            JobEnsurer(CUSTOMER, ensure),
            self.settings.sync,
            self.clock,
        )

    def item(self, row: Row, offset: int, side: Side = "bc") -> Item:
        """``row`` of ``side`` as capture would publish it, at ``offset``."""
        event = RecordChanged(
            side=side,
            table=_TABLES[side],
            record_id=row.id,
            op="upsert",
            modified_at=row.modified_at,
            captured_at=row.modified_at,
            fields=row.fields,
            etag=row.etag,
        )
        topic = self.topics.cdc(side, _TABLES[side])
        return Item(
            event, self.codec.encode(event), JobContext(None, "continuous"), topic, 0, offset
        )

    def lag(self) -> int:
        group = f"{self.topics.prefix}tablesync.apply.{CUSTOMER}"
        total = 0
        for topic in (self.topics.cdc("bc", "customers"), self.topics.cdc("dataverse", "accounts")):
            for p in range(self.broker.partition_count(topic)):
                end = len(self.broker.records(topic, p))
                total += end - (self.broker.committed(group, TopicPartition(topic, p)) or 0)
        return total

    def accounts(self) -> dict[str, Row]:
        """Dataverse's accounts by account number."""
        return {
            str(r.fields.get("accountnumber")): r for r in self.sides["dataverse"].rows("accounts")
        }

    _mappings: Any = None


async def pipeline(document: dict[str, Any] | None = None) -> Pipeline:
    clock = SimClock()
    settings = sim_settings()
    database = MemoryDatabase(clock)
    stores = memory_stores(database)
    if document is None:
        document = {"mappings": {CUSTOMER: copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][CUSTOMER])}}
    mappings = await stores.mappings.replace_all(document)
    topics = topics_for(settings)
    broker = MemoryBroker(clock=clock)
    broker.ensure_topics(topic_specs(topics, mappings))
    sides: dict[Side, MemorySide] = {s: MemorySide(s, clock) for s in ("bc", "dataverse")}
    p = Pipeline(settings, database, stores, broker, sides, topics, Codec(), clock)
    p._mappings = mappings
    return p


def _now() -> float:
    return asyncio.get_running_loop().time()


async def until(condition: Callable[[], bool], *, within_s: float) -> None:
    deadline = _now() + within_s
    while not condition():
        assert _now() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)
