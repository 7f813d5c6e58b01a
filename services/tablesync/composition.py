"""The composition: build every service from the settings and run them until a signal.

``tablesync run <service>`` runs one; ``tablesync run all`` runs capture of
both sides, apply of every mapping, the coordinator and the admin server in
one process, which is what the demo and the tests use. Each process migrates
the state database (idempotent, serialised by an advisory lock) and creates
the topics it uses; started while the database or the broker is away, it
waits for them, logging every try. The singletons (the coordinator, capture
of each side) each work while they hold their lease; a second process of one
waits as its standby. In ``run all`` a service that fails is started again on
its own (``runtime.supervise``); a process of one service exits instead."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import structlog

from tablesync import metrics
from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaConsumers, KafkaPublisher, ensure_topics
from tablesync.adapters.kafka.window import KafkaWindow
from tablesync.adapters.odata import CountingSideApi, open_api
from tablesync.adapters.odata.described import read_tables
from tablesync.adapters.postgres import PostgresLease, migrate, postgres_stores
from tablesync.adapters.postgres.claims import PostgresPairClaims
from tablesync.adapters.postgres.pool import create_pool
from tablesync.adapters.probes import kafka_probe, postgres_probe
from tablesync.adapters.transient import TRANSIENT
from tablesync.admin import AdminService
from tablesync.admin.health_server import HealthServer
from tablesync.application import ApiOpener, ClaimsOpener, Operator
from tablesync.core.described import described_tables, outside_catalog
from tablesync.core.events import Side
from tablesync.core.mappings import MappingSet
from tablesync.core.metadata import TableInfo
from tablesync.core.stored import COORDINATOR_LEASE
from tablesync.core.topics import Topics, TopicSpec
from tablesync.errors import ApiUnavailable
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock, SystemClock
from tablesync.ports.log import ConsumerFactory
from tablesync.ports.state import StateStores
from tablesync.runtime import faults
from tablesync.runtime.apply import ApplyService
from tablesync.runtime.capture import CaptureService
from tablesync.runtime.coordinator import CoordinatorService
from tablesync.runtime.health import Health
from tablesync.runtime.operations import CommandPublisher
from tablesync.runtime.stopping import BACKOFF_S, sleep_or_stop
from tablesync.runtime.supervise import Run, supervised
from tablesync.settings import Settings, redact_dsn

__all__ = [
    "Runtime",
    "ServiceName",
    "SideApis",
    "StoppedWhileWaiting",
    "build_operator",
    "open_runtime",
    "run_services",
    "topic_specs",
    "topics_for",
]

log = structlog.get_logger()

T = TypeVar("T")

ServiceName = Literal["capture", "apply", "coordinator", "admin", "all"]


def topics_for(settings: Settings) -> Topics:
    return Topics(
        prefix=settings.topic_prefix,
        partitions=settings.sync.partitions,
        replication_factor=settings.kafka_replication_factor,
    )


def topic_specs(topics: Topics, mappings: MappingSet) -> list[TopicSpec]:
    specs = topics.control_specs()
    for side in ("bc", "dataverse"):
        specs.extend(topics.cdc_spec(side, table) for table in mappings.tables(side))
    return specs


class SideApis:
    """Each side's API, opened on first use and closed together: a process
    (or a CLI command) that never touches a side never needs it reachable.
    ``counted``: the process's metrics report the traffic (a service's, not a
    one-off command's)."""

    def __init__(
        self,
        settings: Settings,
        *,
        counted: bool = False,
        described: Sequence[TableInfo] = (),
    ) -> None:
        self._settings = settings
        self._counted = counted
        self._described = tuple(described)
        self.opened: dict[Side, CountingSideApi] = {}

    async def __call__(self, side: Side) -> SideApi:
        if side not in self.opened:
            api_settings = self._settings.bc if side == "bc" else self._settings.dataverse
            api = await open_api(side, api_settings)
            if self._described:
                api.use_tables(self._described)
            if self._counted:
                metrics.api_stats(side, api.stats)
            self.opened[side] = api
        return self.opened[side]

    async def probe(self, side: Side) -> None:
        """Whether ``side``'s API answers (opening it first if need be)."""
        await self(side)
        await self.opened[side].probe()

    async def aclose(self) -> None:
        opened, self.opened = self.opened, {}
        for api in opened.values():
            await api.aclose()


def build_operator(
    settings: Settings,
    stores: StateStores,
    *,
    apis: ApiOpener,
    publisher: CommandPublisher,
    codec: Codec | None = None,
    clock: Clock | None = None,
    kafka: KafkaConnection | None = None,
    claims: ClaimsOpener | None = None,
) -> Operator:
    """The operator's operations on these stores: what the CLI, the admin
    server, the demo and the benches call. Each command that decides pairs
    claims them on a connection of its own (``PostgresPairClaims``, opened on
    its first claim), closed when the command ends."""
    return Operator(
        stores=stores,
        apis=apis,
        publisher=publisher,
        window=KafkaWindow(kafka or KafkaConnection.from_settings(settings)),
        codec=codec or Codec(),
        clock=clock or SystemClock(),
        topics=topics_for(settings),
        settings=settings.sync,
        claims=claims or (lambda: PostgresPairClaims(settings.database_dsn())),
    )


@dataclass
class Runtime:
    """What every service shares in one process."""

    settings: Settings
    pool: Any
    stores: StateStores
    publisher: KafkaPublisher
    consumers: ConsumerFactory
    codec: Codec
    clock: Clock
    topics: Topics
    mappings: MappingSet
    kafka: KafkaConnection
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    described: Sequence[TableInfo] = ()
    """The sides' metadata, read at start when the mappings name custom tables."""
    side_apis: SideApis = field(init=False)
    operator: Operator = field(init=False)
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.side_apis = SideApis(self.settings, counted=True, described=self.described)
        h = self.settings.health
        self.health = Health(
            self.clock, stale_after_s=h.stale_after_s, check_timeout_s=h.check_timeout_s
        )
        self.health.add_check("postgres", postgres_probe(self.pool), every_s=h.check_interval_s)
        self.health.add_check(
            "kafka",
            kafka_probe(self.kafka, timeout_s=h.check_timeout_s),
            every_s=h.check_interval_s,
        )
        self.operator = build_operator(
            self.settings,
            self.stores,
            apis=self.side_apis,
            publisher=self.publisher,
            codec=self.codec,
            clock=self.clock,
            kafka=self.kafka,
        )

    async def api(self, side: Side) -> SideApi:
        """``side``'s API; from now on readiness needs it to answer. Opening it
        (BC's company is looked up) waits for an API that is away or throttling,
        as the database and the broker are waited for; a refusal (credentials,
        no such company) ends the start with its reason."""
        self.health.add_check(
            side,
            partial(self.side_apis.probe, side),
            every_s=self.settings.health.api_check_interval_s,
        )
        address = str((self.settings.bc if side == "bc" else self.settings.dataverse).base_url)
        return await _once_reachable(
            self.stop,
            f"{side} API",
            address,
            partial(self.side_apis, side),
            transient=(ApiUnavailable,),
        )

    def lease(self, name: str) -> PostgresLease:
        """The lease of the singleton ``name`` (``coordinator``, ``capture.bc``)."""
        return PostgresLease(
            self.settings.database_dsn(), name, ttl_s=self.settings.sync.lease_ttl_s
        )


class StoppedWhileWaiting(Exception):
    """A stop came while a service was still waiting for its infrastructure."""


async def _once_reachable(
    stop: asyncio.Event,
    waiting_for: str,
    address: str,
    step: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
) -> T:
    """The result of ``step`` once what it needs answers: a service started
    while its database, broker or an API is away (still starting, restarting,
    a network not up yet) waits for it, saying so on every try, rather than
    exiting."""
    attempt = 0
    while True:
        try:
            return await step()
        except transient as exc:
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            log.warning(
                "waiting_for_infrastructure",
                waiting_for=waiting_for,
                address=address,
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            if await sleep_or_stop(stop, delay):
                raise StoppedWhileWaiting(waiting_for) from None


async def _started_publisher(kafka: KafkaConnection) -> KafkaPublisher:
    publisher = KafkaPublisher(kafka)
    try:
        await publisher.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await publisher.stop()
        raise
    return publisher


async def tables_for_mappings(
    settings: Settings, stores: StateStores, *, document: dict[str, Any] | None = None
) -> list[TableInfo]:
    """Both sides' metadata when ``document`` (the mappings in force by default) names
    a table the built-in catalog lacks (a custom table or page); the stores validate
    mappings against it from then on. None read otherwise: a command or a process that
    does not need a side's API does not need it reachable."""
    if document is not None:
        outside = outside_catalog(document)
    else:
        try:
            outside = await stores.mappings.outside_catalog()
        except LookupError:
            return []
    if not outside:
        return []
    described = await read_tables(settings)
    stores.mappings.use_tables(described_tables(described))
    log.info("custom_tables", tables=[f"{side}:{name}" for side, name in outside])
    return described


async def _described_if_needed(
    settings: Settings, stores: StateStores, stop: asyncio.Event
) -> list[TableInfo]:
    address = f"{settings.bc.base_url} and {settings.dataverse.base_url}"
    return await _once_reachable(
        stop,
        "database and metadata",
        address,
        partial(tables_for_mappings, settings, stores),
        transient=TRANSIENT,
    )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, pool_size: int = 10, stop: asyncio.Event | None = None
) -> AsyncIterator[Runtime]:
    """Everything the services share, once the database and the broker answer
    (waited for until ``stop``: then ``StoppedWhileWaiting``)."""
    stop = stop or asyncio.Event()
    faults.configure(settings.fault_point, settings.fault_after)
    dsn, brokers = settings.database_dsn(), settings.kafka_bootstrap_servers
    database = redact_dsn(dsn)
    await _once_reachable(stop, "database", database, lambda: migrate(dsn))
    pool = await _once_reachable(
        stop, "database", database, lambda: create_pool(dsn, max_size=pool_size)
    )
    try:
        stores = postgres_stores(pool)
        described = await _described_if_needed(settings, stores, stop)
        mappings = await _once_reachable(stop, "database", database, stores.mappings.load)
        topics = topics_for(settings)
        kafka = KafkaConnection.from_settings(settings)
        specs = topic_specs(topics, mappings)
        await _once_reachable(stop, "broker", brokers, lambda: ensure_topics(kafka, specs))
        publisher = await _once_reachable(
            stop, "broker", brokers, lambda: _started_publisher(kafka)
        )
        runtime = Runtime(
            settings,
            pool,
            stores,
            publisher,
            KafkaConsumers(kafka),
            Codec(),
            SystemClock(),
            topics,
            mappings,
            kafka,
            stop,
            described,
        )
        try:
            yield runtime
        finally:
            await runtime.side_apis.aclose()
            await publisher.stop()
    finally:
        await pool.close()


@dataclass(frozen=True, slots=True)
class Service:
    """One service of a process: its name and how to build it afresh."""

    name: str
    make: Callable[[], Awaitable[Run]]
    # Health probing and the admin server are the process's own parts, not
    # services that could fail on their own.
    supervisable: bool = True


async def build(
    runtime: Runtime,
    service: ServiceName,
    *,
    side: Side | None = None,
    mapping: str | None = None,
) -> list[Service]:
    """The services of ``service`` (several for ``all``)."""
    r = runtime
    services: list[Service] = []

    def made(run: Run) -> Callable[[], Awaitable[Run]]:
        async def make() -> Run:
            return run

        return make

    if service in ("capture", "all"):
        for s in (side,) if side else ("bc", "dataverse"):
            services.append(Service(f"capture.{s}", partial(_capture, r, s)))
    if service in ("apply", "all"):
        names: Sequence[str] = (mapping,) if mapping else r.mappings.names()
        for name in names:
            r.mappings.get(name)  # an unknown name fails here, with the known ones
            services.append(Service(f"apply.{name}", partial(_apply, r, name)))
    if service in ("coordinator", "all"):
        services.append(Service("coordinator", partial(_coordinator, r)))
    if service in ("admin", "all"):
        admin = AdminService(
            r.settings,
            pool=r.pool,
            operator=r.operator,
            topics=r.topics,
            # In `run all` the admin server is an extra: syncing goes on without it.
            required=service == "admin",
            health=r.health,
        )
        services.append(Service("admin", made(admin.run), supervisable=False))
    # Someone asks about the process's health: its admin's /healthz, or the
    # health port a supervisor probes.
    port = r.settings.health.port
    if port is not None or service in ("admin", "all"):
        services.append(Service("health", made(r.health.run), supervisable=False))
    if port is not None:
        server = HealthServer(r.health, r.settings.health.host, port)
        services.append(Service("health.server", made(server.run), supervisable=False))
    return services


async def _capture(r: Runtime, side: Side) -> Run:
    capture = CaptureService(
        r.settings,
        side,
        stores=r.stores,
        api=await r.api(side),
        publisher=r.publisher,
        consumers=r.consumers,
        codec=r.codec,
        clock=r.clock,
        topics=r.topics,
        singleton=r.lease(f"capture.{side}"),
        loops=r.health.loop,
    )
    return capture.run


async def _apply(r: Runtime, name: str) -> Run:
    apply = ApplyService(
        r.settings,
        name,
        stores=r.stores,
        apis={"bc": await r.api("bc"), "dataverse": await r.api("dataverse")},
        publisher=r.publisher,
        consumers=r.consumers,
        codec=r.codec,
        clock=r.clock,
        topics=r.topics,
        claims=PostgresPairClaims(r.settings.database_dsn()),
        loops=r.health.loop,
    )
    return apply.run


async def _coordinator(r: Runtime) -> Run:
    coordinator = CoordinatorService(
        r.settings,
        stores=r.stores,
        singleton=r.lease(COORDINATOR_LEASE),
        publisher=r.publisher,
        consumers=r.consumers,
        codec=r.codec,
        clock=r.clock,
        topics=r.topics,
        loops=r.health.loop,
    )
    return coordinator.run


async def run_services(
    settings: Settings,
    service: ServiceName,
    *,
    side: Side | None = None,
    mapping: str | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Runs until SIGINT/SIGTERM (or ``stop``): each service finishes its batch,
    commits and closes before the process exits."""
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    # Apply works on its partitions side by side, each with a few queries in flight.
    pool_size = 20 if service in ("all", "apply") else 10
    with contextlib.suppress(StoppedWhileWaiting):
        async with open_runtime(settings, pool_size=pool_size, stop=stop) as runtime:
            services = await build(runtime, service, side=side, mapping=mapping)
            log.info("services_starting", service=service, count=len(services))
            # Each is built once before any starts: a refusal at start-up (no
            # such company, credentials) ends the start with its reason.
            first = [await s.make() for s in services]
            tasks = [
                asyncio.create_task(_started(runtime, s, run, stop, supervise=service == "all"))
                for s, run in zip(services, first, strict=True)
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    error = task.exception()
                    if error is not None:
                        raise error
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                log.info("services_stopped", service=service)


async def _started(
    runtime: Runtime, service: Service, run: Run, stop: asyncio.Event, *, supervise: bool
) -> None:
    """A process of one service ends when it fails (its orchestrator starts it
    again); in ``run all`` a service that fails is started again on its own."""
    if supervise and service.supervisable:
        await supervised(service.name, service.make, stop, clock=runtime.clock, first=run)
        return
    await run(stop)
