"""One simulated deployment: both sides, the log and the state database in
memory, and the real capture, apply and coordinator services on them, each
under a supervisor that starts a new instance after a crash."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from tablesync.adapters.avro import Codec
from tablesync.adapters.memory import MemoryDatabase, memory_stores
from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.adapters.memory.log import MemoryBroker, MemoryConsumer
from tablesync.adapters.memory.singleton import MemorySingleton
from tablesync.adapters.transient import TRANSIENT
from tablesync.composition import topic_specs, topics_for
from tablesync.core.events import RecordChanged, Side
from tablesync.core.topics import Topics
from tablesync.emulators.memory import MemorySide
from tablesync.ports.log import PartitionHook, TopicPartition
from tablesync.ports.state import StateStores
from tablesync.runtime.apply import ApplyService
from tablesync.runtime.capture import CaptureService
from tablesync.runtime.coordinator import CoordinatorService
from tablesync.settings import Settings, SyncSettings
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.simulation.sim import Actor, Crashed, Sim, SimClock

__all__ = ["World", "open_world", "restart"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
MAPPING = "CUSTOMER"
# Built once: its schemas take longer to parse than a schedule's events to decode.
_CODEC = Codec()


def _document() -> dict[str, Any]:
    """The fault suite's CUSTOMER mapping alone: both directions, creates
    both ways, deletions propagated, BC wins a conflict."""
    mapping = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][MAPPING])
    return {"mappings": {MAPPING: mapping}}


class _Service(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class _Supervised:
    name: str
    kind: str
    build: Callable[[Actor, _Supervised], _Service]
    generation: int = 0
    actor: Actor | None = None
    consumers: list[MemoryConsumer] = field(default_factory=list)
    on_crash: list[Callable[[], Any]] = field(default_factory=list)


@dataclass
class World:
    sim: Sim
    settings: Settings
    database: MemoryDatabase
    stores: StateStores
    broker: MemoryBroker
    sides: dict[Side, MemorySide]
    topics: Topics
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    supervised: list[_Supervised] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    captures: list[CaptureService] = field(default_factory=list)
    """Every capture instance started, crashed ones too."""

    def consumers_of(self, s: _Supervised) -> Any:
        """The consumer factory of one service: every consumer it makes is
        dropped without a stop (a killed process) when that service crashes."""

        def make(
            group_id: str,
            topics: Sequence[str],
            *,
            client_id: str = "tablesync",
            on_assigned: PartitionHook | None = None,
            on_revoked: PartitionHook | None = None,
            auto_offset_reset: Any = "earliest",
            max_poll_interval_ms: int = 600_000,
        ) -> MemoryConsumer:
            consumer = self.broker.consumer(
                group_id,
                topics,
                client_id=client_id,
                on_assigned=on_assigned,
                on_revoked=on_revoked,
                auto_offset_reset=auto_offset_reset,
                max_poll_interval_ms=max_poll_interval_ms,
            )
            s.consumers.append(consumer)
            return consumer

        return make

    def stall(self, actor: Actor, seconds: float) -> None:
        """A process frozen: its consumers send no heartbeat meanwhile."""
        for s in self.supervised:
            if s.actor is actor:
                for consumer in s.consumers:
                    consumer.stall(seconds)

    def supervise(
        self, name: str, kind: str, build: Callable[[Actor, _Supervised], _Service]
    ) -> None:
        s = _Supervised(name, kind, build)
        self.supervised.append(s)
        self.tasks.append(asyncio.get_running_loop().create_task(self._keep_running(s)))

    async def _keep_running(self, s: _Supervised) -> None:
        while not self.stop.is_set():
            s.generation += 1
            actor = Actor(f"{s.name}#{s.generation}", s.kind)
            s.actor = actor
            s.consumers = []
            s.on_crash = []
            service = s.build(actor, s)
            self.sim.note(actor.name, "start")
            task = self.sim.run_as(actor, partial(service.run, self.stop))
            try:
                await task
                return  # stopped
            except (Crashed, asyncio.CancelledError):
                if not actor.dead:
                    raise
            except TRANSIENT as exc:
                # Met while starting (the mappings unreadable): the process
                # exits and its supervisor starts it again.
                self.sim.note(actor.name, "exited", repr(exc)[:120])
                actor.dead = True
            except Exception as exc:
                if not actor.dead:
                    self.sim.failures.append(f"{actor.name} stopped: {type(exc).__name__}: {exc}")
                    self.sim.note(actor.name, "stopped", repr(exc)[:120])
                    actor.dead = True
            for consumer in s.consumers:
                consumer.crash()
            for hook in s.on_crash:
                await hook()
            # A supervisor (systemd, Kubernetes) starts the process again after a while.
            await asyncio.sleep(self.sim.rng.uniform(0.5, 4.0))

    def lag(self) -> int:
        """Events of the mapping's topics not yet committed by apply's group."""
        group = f"{self.topics.prefix}tablesync.apply.{MAPPING}"
        total = 0
        for topic in (self.topics.cdc("bc", "customers"), self.topics.cdc("dataverse", "accounts")):
            for p in range(self.broker.partition_count(topic)):
                end = len(self.broker.records(topic, p))
                total += end - (self.broker.committed(group, TopicPartition(topic, p)) or 0)
        return total

    def changes(self) -> dict[tuple[str, int], list[RecordChanged]]:
        """The change events on the mapping's topics, by topic and partition."""
        found: dict[tuple[str, int], list[RecordChanged]] = {}
        for topic in (self.topics.cdc("bc", "customers"), self.topics.cdc("dataverse", "accounts")):
            for p in range(self.broker.partition_count(topic)):
                events = found[(topic, p)] = []
                for record in self.broker.records(topic, p):
                    event = _CODEC.decode(record.value) if record.value is not None else None
                    if isinstance(event, RecordChanged):
                        events.append(event)
        return found

    def echoes_skipped(self) -> int:
        """Rows the captures read and did not publish: versions their couplings held."""
        return sum(c.echoes for c in self.captures)

    def open_intents(self) -> list[str]:
        t = self.database.t
        creates = [f"create {m} {s} {i}" for m, (s, i), _ in t.intents.items()]
        writes = [f"{k} {m} {s} {i}" for m, (s, i, k), _ in t.writes.items()]
        return creates + writes

    def capturing(self) -> bool:
        """Whether both captures hold a checkpoint: what changes from then on is
        theirs to publish (what was there before is a full synchronization's)."""
        held = self.database.t.checkpoints
        return all(key in held for key in (("bc", "customers"), ("dataverse", "accounts")))

    def versions(self) -> tuple[tuple[str, ...], ...]:
        return tuple(
            tuple(f"{r.id}:{r.etag}" for r in self.sides[s].rows(t))
            for s, t in (("bc", "customers"), ("dataverse", "accounts"))
        )

    async def close(self) -> None:
        self.stop.set()
        _, pending = await asyncio.wait(self.tasks, timeout=120)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Tasks of crashed instances still waiting somewhere: nothing awaits them.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()


def sim_settings() -> Settings:
    sync = SyncSettings(
        poll_interval_s=0.5,
        poll_overlap_s=1.0,
        apply_batch_size=50,
        retry_backoff_s=1.0,
        retry_backoff_max_s=8.0,
        delete_scan_interval_s=3.0,
        intent_timeout_s=6.0,
        partitions=3,
        lease_ttl_s=3.0,
        lease_renew_s=1.0,
    )
    return Settings(sync=sync, topic_prefix="sim.")


async def open_world(sim: Sim, *, apply_instances: int = 1) -> World:
    clock = SimClock()
    settings = sim_settings()

    async def db_pause(what: str) -> None:
        await sim.pause(what, port="db")

    async def log_pause(what: str) -> None:
        await sim.pause(what, port="log")

    database = MemoryDatabase(clock, pause=db_pause)
    stores = memory_stores(database)
    broker = MemoryBroker(clock=clock, rng=sim.rng, session_timeout_s=10.0, pause=log_pause)
    sides: dict[Side, MemorySide] = {}
    for s in _SIDES:
        side = MemorySide(s, clock)

        async def api_pause(what: str, _s: Side = s) -> None:
            await sim.pause(f"{_s}.{what}", port="api", side=_s)

        side._pause = api_pause  # type: ignore[method-assign]
        sides[s] = side
    mappings = await stores.mappings.replace_all(_document())
    topics = topics_for(settings)
    broker.ensure_topics(topic_specs(topics, mappings))
    world = World(sim, settings, database, stores, broker, sides, topics)
    _start(world, apply_instances)
    return world


def restart(world: World, *, apply_instances: int = 1) -> World:
    """Every service of a closed ``world`` started again on its sides, state
    database and log as they were left: a restart of the whole deployment."""
    again = World(
        world.sim,
        world.settings,
        world.database,
        world.stores,
        world.broker,
        world.sides,
        world.topics,
    )
    _start(again, apply_instances)
    return again


def _start(world: World, apply_instances: int) -> None:
    world.sim.on_stall = world.stall
    settings, stores, sides, topics = world.settings, world.stores, world.sides, world.topics
    database, clock = world.database, SimClock()
    codec = Codec()
    publisher = world.broker.publisher()
    apis: dict[Side, Any] = dict(sides)

    for s in _SIDES:

        def capture(actor: Actor, supervised: _Supervised, _s: Side = s) -> _Service:
            del actor
            service = CaptureService(
                settings,
                _s,
                stores=stores,
                api=sides[_s],
                publisher=publisher,
                consumers=world.consumers_of(supervised),
                codec=codec,
                clock=clock,
                topics=topics,
                singleton=MemorySingleton(
                    database, f"capture.{_s}", ttl_s=settings.sync.lease_ttl_s
                ),
            )
            world.captures.append(service)
            return service

        world.supervise(f"capture-{s}", "capture", capture)
    for n in range(apply_instances):

        def apply(actor: Actor, supervised: _Supervised) -> _Service:
            claims = MemoryPairClaims(database)
            # A dead instance's connection closes, and its claims with it.
            supervised.on_crash.append(claims.close)
            return ApplyService(
                settings,
                MAPPING,
                stores=stores,
                apis=apis,
                publisher=publisher,
                consumers=world.consumers_of(supervised),
                codec=codec,
                clock=clock,
                topics=topics,
                claims=claims,
                instance=actor.name,
                new_id=world.sim.new_id,
            )

        world.supervise(f"apply-{n}", "apply", apply)

    def coordinator(actor: Actor, supervised: _Supervised) -> _Service:
        del actor
        # A dead holder's lease expires: the next instance waits that long.
        singleton = MemorySingleton(database, "coordinator", ttl_s=settings.sync.lease_ttl_s)
        return CoordinatorService(
            settings,
            stores=stores,
            singleton=singleton,
            publisher=publisher,
            consumers=world.consumers_of(supervised),
            codec=codec,
            clock=clock,
            topics=topics,
        )

    world.supervise("coordinator", "coordinator", coordinator)
