"""A whole tablesync on the real Kafka and PostgreSQL, with both API emulators
on real sockets: what the engine tests drive.

Every stack has its own state database, emulator databases and topic prefix,
so tests never see each other's data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import yaml

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.postgres import postgres_stores
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.composition import run_services, tables_for_mappings
from tablesync.emulators import seed
from tablesync.emulators.bc import create_app as bc_app
from tablesync.emulators.common.custom import load_customizations
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse import create_app as dv_app
from tablesync.ports.state import Mappings
from tablesync.settings import ApiSettings, KafkaSettings, Settings, SyncSettings, with_database

__all__ = ["Stack", "open_stack", "wait_applied", "wait_for"]

TOKEN = "stack-test-token"
DEFAULT_MAPPINGS = default_mapping_file()
T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout_s: float = 60.0, what: str = "condition"
) -> T:
    """Polls ``probe`` until it returns something truthy; fails naming ``what``.

    The default is generous on purpose: a wait costs nothing when its condition
    holds early, and a loaded CI machine can make any step of the pipeline late."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


async def wait_applied(stack: Stack, mapping: str, topic: str, partition: int, offset: int) -> None:
    """Waits until ``mapping``'s apply has committed past ``offset`` on that partition."""

    async def passed() -> bool:
        position = await stack.pool.fetchval(
            "SELECT next_offset FROM apply_positions WHERE mapping = $1 AND topic = $2 "
            "AND partition = $3",
            mapping,
            topic,
            partition,
        )
        return bool(position and position > offset)

    await wait_for(passed, what=f"{mapping} to apply the event at {topic}[{partition}]@{offset}")


@dataclass
class Stack:
    settings: Settings
    pool: Any
    bc: httpx.AsyncClient
    dv: httpx.AsyncClient
    bc_company: str
    bc_dsn: str = ""
    """The BC emulator's own database (for what no API call can do: a late commit)."""
    dv_dsn: str = ""
    mappings: Mappings | None = None
    """The mappings in force, validated against the sides' metadata when they name
    custom tables (as the services validate them)."""
    bc_routes: dict[str, str] = field(default_factory=dict)
    """Custom BC pages: entity set -> API route (publisher/group/version)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    # services

    async def start(self, **overrides: Any) -> None:
        assert self._task is None, "services already running"
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            run_services(settings, "all", stop=self._stop, handle_signals=False)
        )
        await wait_for(self.capture_polling, timeout_s=60, what="capture to poll every table")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None

    def environment(self, **extra: str) -> dict[str, str]:
        """The environment a separate ``tablesync`` process needs to be this stack."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env.update(
            {
                "TABLESYNC_DATABASE_URL": s.database_dsn(),
                "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
                "TABLESYNC_TOPIC_PREFIX": s.topic_prefix,
                "TABLESYNC_LOG_FORMAT": "json",
                "TABLESYNC_BC__BASE_URL": s.bc.base_url,
                "TABLESYNC_BC__STATIC_TOKEN": TOKEN,
                "TABLESYNC_DATAVERSE__BASE_URL": s.dataverse.base_url,
                "TABLESYNC_DATAVERSE__STATIC_TOKEN": TOKEN,
                "TABLESYNC_SYNC__POLL_INTERVAL_S": str(s.sync.poll_interval_s),
                "TABLESYNC_SYNC__PARTITIONS": str(s.sync.partitions),
                "TABLESYNC_SYNC__DELETE_SCAN_INTERVAL_S": str(s.sync.delete_scan_interval_s),
                "TABLESYNC_SYNC__RETRY_BACKOFF_S": str(s.sync.retry_backoff_s),
                "TABLESYNC_SYNC__RETRY_BACKOFF_MAX_S": str(s.sync.retry_backoff_max_s),
            }
        )
        env.update(extra)
        return env

    async def spawn(self, *args: str, log: Path, **extra: str) -> asyncio.subprocess.Process:
        """``tablesync <args>`` in its own process, output to ``log``."""
        out = log.open("ab")
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tablesync.cli",
                *args,
                env=self.environment(**extra),
                stdout=out,
                stderr=out,
            )
        finally:
            out.close()

    async def capture_polling(self) -> bool:
        if self._task is not None and self._task.done():
            self._task.result()
        mappings = await (self.mappings or MappingStore(self.pool)).load()
        tables = len(mappings.tables("bc")) + len(mappings.tables("dataverse"))
        count = await self.pool.fetchval("SELECT count(*) FROM capture_checkpoints")
        return bool(count == tables)

    # the sides

    def bc_path(self, entity_set: str, record_id: str | None = None) -> str:
        route = (
            "/BC/api/tablesync/integration/v1.0" if entity_set == "salespeople" else "/BC/api/v2.0"
        )
        if entity_set in self.bc_routes:
            route = f"/BC/api/{self.bc_routes[entity_set]}"
        path = f"{route}/companies({self.bc_company})/{entity_set}"
        return f"{path}({record_id})" if record_id else path

    async def bc_rows(self, entity_set: str, query: str = "") -> list[dict[str, Any]]:
        return await _all(self.bc, self.bc_path(entity_set) + query)

    async def dv_rows(self, entity_set: str, query: str = "") -> list[dict[str, Any]]:
        return await _all(self.dv, f"/api/data/v9.2/{entity_set}{query}")

    async def bc_patch(
        self, entity_set: str, record_id: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        r = await self.bc.patch(
            self.bc_path(entity_set, record_id), json=values, headers={"If-Match": "*"}
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    async def bc_post(self, entity_set: str, values: dict[str, Any]) -> dict[str, Any]:
        r = await self.bc.post(self.bc_path(entity_set), json=values)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    async def dv_patch(
        self, entity_set: str, record_id: str, values: dict[str, Any], *, as_user: str | None = None
    ) -> dict[str, Any]:
        headers = {"If-Match": "*", "Prefer": "return=representation"}
        if as_user:
            headers["MSCRMCallerID"] = as_user
        r = await self.dv.patch(
            f"/api/data/v9.2/{entity_set}({record_id})", json=values, headers=headers
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    async def dv_post(self, entity_set: str, values: dict[str, Any]) -> dict[str, Any]:
        r = await self.dv.post(
            f"/api/data/v9.2/{entity_set}", json=values, headers={"Prefer": "return=representation"}
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    # the state

    async def couplings(self, mapping: str) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT bc_id::text AS bc, dv_id::text AS dv FROM couplings WHERE mapping = $1", mapping
        )
        return {r["bc"]: r["dv"] for r in rows}

    async def jobs(self, run_id: str | None = None) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM job_totals WHERE ($1::uuid IS NULL OR run_id = $1) "
            "ORDER BY started_at, mapping, direction",
            uuid.UUID(run_id) if run_id else None,
        )
        return rows

    async def set_mapping(self, name: str, **changes: Any) -> None:
        await (self.mappings or MappingStore(self.pool)).change(name, **changes)


async def _all(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        r = await client.get(next_url)
        r.raise_for_status()
        data = r.json()
        rows.extend(data["value"])
        next_url = data.get("@odata.nextLink")
    return rows


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def open_stack(
    *,
    kafka: str,
    state_dsn: str,
    topic_prefix: str,
    demo: bool = True,
    mappings_document: dict[str, Any] | None = None,
    sync: SyncSettings | None = None,
    kafka_security: KafkaSettings | None = None,
    custom: Path | None = None,
) -> AsyncIterator[Stack]:
    """``custom``: the emulators' customization file (``TABLESYNC_EMULATOR__CUSTOM``);
    the services read its BC pages' routes as ``TABLESYNC_BC__API_ROUTES``."""
    customizations = load_customizations(custom)
    pages = {p.entity_set: p.route for p in customizations.bc.pages}
    admin = with_database(state_dsn, "postgres")
    suffix = uuid.uuid4().hex[:10]
    bc_db, dv_db = f"emu_bc_{suffix}", f"emu_dv_{suffix}"
    bc_dsn, dv_dsn = with_database(state_dsn, bc_db), with_database(state_dsn, dv_db)
    for name in (bc_db, dv_db):
        await _create_database(admin, name)
    if demo:
        await seed.seed_demo("bc", bc_dsn, custom=customizations)
        await seed.seed_demo("dataverse", dv_dsn, custom=customizations)
    bc_server = BackgroundServer(
        bc_app(
            EmulatorConfig(
                dsn=bc_dsn, token=TOKEN, requests_per_window=100_000, custom=customizations
            )
        )
    )
    dv_server = BackgroundServer(
        dv_app(
            EmulatorConfig(
                dsn=dv_dsn, token=TOKEN, requests_per_window=100_000, custom=customizations
            )
        )
    )
    bc_url, dv_url = await bc_server.start(), await dv_server.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    settings = Settings(
        database_url=state_dsn,  # type: ignore[arg-type]
        kafka_bootstrap_servers=kafka,
        kafka=kafka_security or KafkaSettings(),
        topic_prefix=topic_prefix,
        bc=ApiSettings(
            base_url=f"{bc_url}/BC/api/v2.0",  # type: ignore[arg-type]
            static_token=TOKEN,  # type: ignore[arg-type]
            api_routes=sorted(set(pages.values())),
        ),
        dataverse=ApiSettings(base_url=f"{dv_url}/api/data/v9.2", static_token=TOKEN),  # type: ignore[arg-type]
        sync=sync
        or SyncSettings(
            poll_interval_s=0.2,
            partitions=3,
            delete_scan_interval_s=2.0,
            retry_backoff_s=0.5,
            retry_backoff_max_s=2.0,
        ),
    )
    pool = await create_pool(state_dsn, max_size=4)
    bc = httpx.AsyncClient(base_url=bc_url, headers=headers, timeout=30)
    dv = httpx.AsyncClient(base_url=dv_url, headers=headers, timeout=30)
    stack: Stack | None = None
    try:
        document = mappings_document or yaml.safe_load(DEFAULT_MAPPINGS.read_text())
        stores = postgres_stores(pool)
        await tables_for_mappings(settings, stores, document=document)
        await stores.mappings.replace_all(document)
        companies = (await bc.get("/BC/api/v2.0/companies")).json()["value"]
        stack = Stack(
            settings, pool, bc, dv, companies[0]["id"], bc_dsn, dv_dsn, stores.mappings, pages
        )
        yield stack
    finally:
        if stack is not None:
            await stack.stop()
        await bc.aclose()
        await dv.aclose()
        await pool.close()
        await bc_server.stop()
        await dv_server.stop()
        for name in (bc_db, dv_db):
            await _drop_database(admin, name)
