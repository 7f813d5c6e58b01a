"""``tablesync demo``: both emulators with demo data, every service, a full
synchronization with its job table, then continuous sync until Ctrl-C.

Everything runs in this one process, on the servers the settings name (by
default the local ones ``make infra-up`` starts). With ``reset`` it starts
from a clean slate: the emulators' databases are reseeded, and tablesync's
state tables and topics are emptied."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import asyncpg
import structlog

from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher, ensure_topics
from tablesync.adapters.kafka.topics import delete_topics
from tablesync.adapters.mapping_file import configured_mapping_file, load_mapping_file
from tablesync.adapters.postgres import migrate, postgres_stores
from tablesync.adapters.postgres.pool import create_pool
from tablesync.application import Operator
from tablesync.composition import SideApis, build_operator, run_services, topic_specs, topics_for
from tablesync.emulators import seed
from tablesync.emulators.bc import create_app as bc_app
from tablesync.emulators.common.custom import load_customizations
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse import create_app as dv_app
from tablesync.runtime.operations import RunProgress
from tablesync.settings import Settings

__all__ = ["run_demo"]

log = structlog.get_logger()

_STATE_TABLES = (
    "couplings",
    "job_errors",
    "job_partitions",
    "jobs",
    "runs",
    "record_status",
    "create_intents",
    "write_intents",
    "deleted_records",
    "apply_positions",
    "snapshots",
    "capture_checkpoints",
    "sync_watermarks",
)


async def run_demo(
    settings: Settings,
    *,
    reset: bool,
    keep_running: bool,
    show: Callable[[RunProgress], None],
    say: Callable[[str], None],
) -> RunProgress:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await migrate(settings.database_dsn())
    if reset:
        say("resetting the demo: emulator data, tablesync state and topics")
        await _reset(settings)
    for side in ("bc", "dataverse"):
        report = await seed.seed_demo(side, settings.emulator_dsn(side), wipe=reset)
        say(f"{side} emulator data: " + ", ".join(f"{t} {n}" for t, n in report.rows.items()))
    emulator = settings.emulator
    servers = [
        BackgroundServer(
            bc_app(EmulatorConfig.from_settings(settings, "bc")), emulator.host, emulator.bc_port
        ),
        BackgroundServer(
            dv_app(EmulatorConfig.from_settings(settings, "dataverse")),
            emulator.host,
            emulator.dataverse_port,
        ),
    ]
    for server in servers:
        await server.start()
    say(f"BC API v2.0 emulator on {settings.bc.base_url}")
    say(f"Dataverse Web API emulator on {settings.dataverse.base_url}")
    say(
        f"dashboard: http://{settings.admin_host}:{settings.admin_port}/"
        " (it asks for TABLESYNC_ADMIN_TOKEN)"
    )
    pool = await create_pool(settings.database_dsn(), max_size=3)
    kafka = KafkaConnection.from_settings(settings)
    publisher = KafkaPublisher(kafka, client_id="tablesync-demo")
    apis = SideApis(settings)
    operator = build_operator(
        settings, postgres_stores(pool), apis=apis, publisher=publisher, kafka=kafka
    )
    services: asyncio.Task[None] | None = None
    try:
        document, mappings = load_mapping_file(configured_mapping_file(settings.sync.mapping_file))
        await operator.load_mappings(document, requested_by="demo")
        await ensure_topics(kafka, topic_specs(topics_for(settings), mappings))
        say("mappings: " + " -> ".join(mappings.names()))
        services = asyncio.create_task(
            run_services(settings, "all", stop=stop, handle_signals=False)
        )
        async with publisher:
            progress = await _full_sync(operator, services, show)
        if keep_running and not stop.is_set():
            say(
                "continuous sync is running; change a record on either side "
                "(or run `tablesync jobs` in another shell). Ctrl-C stops."
            )
            await stop.wait()
        return progress
    finally:
        stop.set()
        if services is not None:
            await asyncio.gather(services, return_exceptions=True)
        await apis.aclose()
        await pool.close()
        for server in servers:
            await server.stop()


async def _full_sync(
    operator: Operator, services: asyncio.Task[None], show: Callable[[RunProgress], None]
) -> RunProgress:
    run_id = await operator.full_sync(requested_by="demo")
    started = time.monotonic()

    async def watch(progress: RunProgress) -> None:
        if services.done():
            services.result()

    progress = await operator.wait(run_id, on_progress=watch, timeout_s=600)
    log.info("demo_full_sync_finished", seconds=round(time.monotonic() - started, 1))
    show(progress)
    return progress


async def _reset(settings: Settings) -> None:
    custom = load_customizations(settings.emulator.custom)
    for side in ("bc", "dataverse"):
        with contextlib.suppress(asyncpg.InvalidCatalogNameError):
            await seed.reset(side, settings.emulator_dsn(side), custom=custom)
    conn = await asyncpg.connect(settings.database_dsn())
    try:
        await conn.execute(f"TRUNCATE {', '.join(_STATE_TABLES)} CASCADE")
    finally:
        await conn.close()
    await _delete_topics(settings)


async def _delete_topics(settings: Settings) -> None:
    await delete_topics(KafkaConnection.from_settings(settings), topics_for(settings).prefix)
