"""One isolated tablesync for a bench: its own state and emulator databases
(random names, dropped at the end), its own topic prefix (topics deleted at the
end), both API emulators and the services as separate processes, the way
production runs them (``tablesync emulator …``, ``tablesync run …``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from bench.probe import OUT_ENV
from bench.procs import Child, Processes, python_argv
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres import migrate, postgres_stores
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.application import Operator
from tablesync.composition import SideApis, build_operator
from tablesync.localinfra.network import free_ports
from tablesync.runtime.operations import RunProgress
from tablesync.settings import ApiSettings, Settings, SyncSettings, with_database

__all__ = [
    "CONNECTIONS_NEEDED",
    "EMULATOR_BUDGET",
    "Databases",
    "Deployment",
    "Infra",
    "deployment",
    "free_port",
    "wait_for_headroom",
]

TOKEN = "bench-token"
# The emulators' service-protection budget is raised so that a bench measures
# tablesync, not the emulated throttle (which the connector tests cover).
EMULATOR_BUDGET = "1000000"
_READY_TIMEOUT_S = 120.0
# What one deployment may hold at once: the services' and the emulators' pools
# grow to this under load (measured: see ``postgres_connections`` in the results).
CONNECTIONS_NEEDED = 40
_HEADROOM_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Infra:
    """The Kafka and PostgreSQL servers the benches use."""

    kafka: str
    dsn: str
    """Any database on the server: the benches create their own next to it."""

    @property
    def admin_dsn(self) -> str:
        return with_database(self.dsn, "postgres")


async def wait_for_headroom(infra: Infra, needed: int = CONNECTIONS_NEEDED) -> None:
    """Until the PostgreSQL server has ``needed`` connections to spare.

    The local server is shared (other test suites may be running on it) and
    refuses clients past ``max_connections``; a service refused a connection
    mid-run would end the bench."""
    deadline = time.monotonic() + _HEADROOM_TIMEOUT_S
    told = False
    while True:
        conn = await asyncpg.connect(infra.admin_dsn)
        try:
            limit = int(await conn.fetchval("SHOW max_connections"))
            reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
            used = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity"))
        finally:
            await conn.close()
        free = limit - reserved - used
        if free >= needed:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"PostgreSQL has {free} of {limit} connections free; the bench needs {needed}"
            )
        if not told:
            print(
                f"waiting for PostgreSQL connections: {used} of {limit} in use by others, "
                f"the bench needs {needed}",
                flush=True,
            )
            told = True
        await asyncio.sleep(2.0)


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Databases:
    """Databases of one bench, created under random names and dropped at the end."""

    infra: Infra
    tag: str
    names: list[str] = field(default_factory=list)

    async def create(self, kind: str, *, template: str | None = None) -> str:
        name = f"bench_{self.tag}_{kind}"
        conn = await asyncpg.connect(self.infra.admin_dsn)
        try:
            clause = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()
        self.names.append(name)
        return with_database(self.infra.dsn, name)

    async def drop(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
        conn = await asyncpg.connect(self.infra.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        if name in self.names:
            self.names.remove(name)

    async def drop_all(self) -> None:
        for name in list(reversed(self.names)):
            await self.drop(with_database(self.infra.dsn, name))


@dataclass
class Deployment:
    infra: Infra
    workdir: Path
    procs: Processes
    dbs: Databases
    prefix: str
    state_dsn: str
    bc_dsn: str
    dv_dsn: str
    sync: dict[str, str]
    """``TABLESYNC_SYNC__*`` overrides, by option name; the defaults otherwise."""
    emulator_env: dict[str, str] = field(default_factory=dict)
    """Variables the emulators get beside the deployment's (``TABLESYNC_EMULATOR__*``)."""
    users: int = 1
    """Application users per side: the emulators accept a token for each, and the
    services sign in to each side as all of them (``extra_clients``)."""
    bc_url: str = ""
    dv_url: str = ""
    emulators: dict[str, Child] = field(default_factory=dict)
    services: dict[str, Child] = field(default_factory=dict)
    pool: Any = None

    # configuration

    @property
    def settings(self) -> Settings:
        values: dict[str, Any] = dict(self.sync)
        return Settings(
            database_url=self.state_dsn,
            kafka_bootstrap_servers=self.infra.kafka,
            topic_prefix=self.prefix,
            bc=ApiSettings(base_url=f"{self.bc_url}/BC/api/v2.0", static_token=TOKEN),
            dataverse=ApiSettings(base_url=f"{self.dv_url}/api/data/v9.2", static_token=TOKEN),
            sync=SyncSettings(**values),
        )

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env.update(
            {
                "TABLESYNC_DATABASE_URL": self.state_dsn,
                "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka,
                "TABLESYNC_TOPIC_PREFIX": self.prefix,
                "TABLESYNC_LOG_FORMAT": "json",
                "TABLESYNC_BC__BASE_URL": f"{self.bc_url}/BC/api/v2.0",
                "TABLESYNC_BC__STATIC_TOKEN": TOKEN,
                "TABLESYNC_DATAVERSE__BASE_URL": f"{self.dv_url}/api/data/v9.2",
                "TABLESYNC_DATAVERSE__STATIC_TOKEN": TOKEN,
                "TABLESYNC_EMULATOR__TOKEN": TOKEN,
                "TABLESYNC_EMULATOR__REQUESTS_PER_WINDOW": EMULATOR_BUDGET,
                "TABLESYNC_EMULATOR__BC_DATABASE_URL": self.bc_dsn,
                "TABLESYNC_EMULATOR__DATAVERSE_DATABASE_URL": self.dv_dsn,
            }
        )
        env.update({f"TABLESYNC_SYNC__{k.upper()}": v for k, v in self.sync.items()})
        if self.users > 1:
            tokens = [f"{TOKEN}-user{n}" for n in range(1, self.users)]
            clients = json.dumps([{"static_token": t} for t in tokens])
            env["TABLESYNC_EMULATOR__EXTRA_TOKENS"] = json.dumps(tokens)
            env["TABLESYNC_BC__EXTRA_CLIENTS"] = clients
            env["TABLESYNC_DATAVERSE__EXTRA_CLIENTS"] = clients
        env.update(extra)
        return env

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def probe_file(self, name: str) -> Path:
        return self.workdir / f"{name}.probe.json"

    # processes

    async def start_emulators(self) -> None:
        async def one(side: str) -> None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            child = await self.procs.spawn(
                f"emulator-{side}",
                python_argv("tablesync.cli", "emulator", side, "--port", str(port)),
                env=self.environment(**self.emulator_env),
                log=self.log(f"emulator-{side}"),
                tier=0,
            )
            self.emulators[side] = child
            await _until_answers(child, f"{url}/_emulator/config")
            if side == "bc":
                self.bc_url = url
            else:
                self.dv_url = url

        await asyncio.gather(one("bc"), one("dataverse"))

    async def start_service(self, name: str, *args: str, probe: bool = True) -> Child:
        """``tablesync <args>`` (through the probe unless told otherwise),
        logging to ``<name>.log``."""
        if probe:
            argv = python_argv("bench.probe", *args)
            env = self.environment(**{OUT_ENV: str(self.probe_file(name))})
        else:
            argv = python_argv("tablesync.cli", *args)
            env = self.environment()
        child = await self.procs.spawn(name, argv, env=env, log=self.log(name), cwd=_ROOT)
        self.services[name] = child
        return child

    async def start_services(
        self, services: Mapping[str, Sequence[str]], *, probe: bool = True
    ) -> None:
        for name, args in services.items():
            await self.start_service(name, *args, probe=probe)

    async def wait_ready(
        self, services: Mapping[str, Sequence[str]], mappings: Sequence[str]
    ) -> None:
        """Until capture polls every table of ``mappings`` and every apply
        consumer among ``services`` has its partitions."""
        await self.wait_capture_polling(2 * len(mappings))
        for name, args in services.items():
            if "apply" in args:
                count = 1 if "--mapping" in args else len(mappings)
                await self.wait_log(name, "partitions_assigned", count)

    async def stop_services(self) -> None:
        """Stops the services gracefully, so that their probes write their timers."""
        children = list(self.services.values())
        self.services.clear()
        await asyncio.gather(*(self.procs.stop(c) for c in children))

    async def wait_capture_polling(self, tables: int, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Until capture has a checkpoint for every table it polls."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.procs.check_alive()
            count = await self.pool.fetchval("SELECT count(*) FROM capture_checkpoints")
            if count >= tables:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("capture never polled every table")

    async def wait_log(
        self, name: str, event: str, count: int = 1, timeout_s: float = _READY_TIMEOUT_S
    ) -> None:
        """Until ``name``'s log holds ``count`` lines of ``event``."""
        needle = f'"event": "{event}"'
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.procs.check_alive()
            with contextlib.suppress(OSError):
                if self.log(name).read_text(errors="replace").count(needle) >= count:
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{name} logged {event} fewer than {count} times")

    # operations

    async def load_mappings(self, document: dict[str, Any]) -> None:
        await MappingStore(self.pool).replace_all(document)

    @contextlib.asynccontextmanager
    async def operator(self) -> AsyncIterator[Operator]:
        apis = SideApis(self.settings)
        async with KafkaPublisher(
            KafkaConnection(self.infra.kafka), client_id="tablesync-bench"
        ) as publisher:
            try:
                yield build_operator(
                    self.settings, postgres_stores(self.pool), apis=apis, publisher=publisher
                )
            finally:
                await apis.aclose()

    async def full_sync(
        self, mappings: Sequence[str] = (), *, timeout_s: float = 3600.0
    ) -> RunProgress:
        async with self.operator() as operator:
            run_id = await operator.full_sync(mappings=list(mappings), requested_by="bench")
            deadline = time.monotonic() + timeout_s
            while True:
                self.procs.check_alive()
                progress = await operator.progress(run_id)
                if progress.done:
                    return progress
                if time.monotonic() > deadline:
                    raise TimeoutError(f"full sync {run_id} did not finish in {timeout_s:.0f} s")
                await asyncio.sleep(0.5)

    async def emulator_stats(self, side: str) -> dict[str, Any]:
        return await self._emulator_control(side, "stats")

    async def emulator_config(self, side: str) -> dict[str, Any]:
        """The limits and tuning the emulator of ``side`` runs with."""
        return await self._emulator_control(side, "config")

    async def _emulator_control(self, side: str, path: str) -> dict[str, Any]:
        url = self.bc_url if side == "bc" else self.dv_url
        async with httpx.AsyncClient(headers=_auth(), timeout=30) as client:
            response = await client.get(f"{url}/_emulator/{path}")
            response.raise_for_status()
            payload: dict[str, Any] = response.json()
            return payload

    async def delete_topics(self) -> None:
        admin = AIOKafkaAdminClient(**KafkaConnection(self.infra.kafka).client_kwargs())
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()


_ROOT = Path(__file__).resolve().parents[1]


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def _until_answers(child: Child, url: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    async with httpx.AsyncClient(headers=_auth(), timeout=5) as client:
        while time.monotonic() < deadline:
            if not child.running:
                raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{child.name} did not answer at {url}")


@contextlib.asynccontextmanager
async def deployment(
    infra: Infra,
    *,
    name: str,
    sync: dict[str, str] | None = None,
    bc_template: str | None = None,
    dv_template: str | None = None,
    state_template: str | None = None,
    emulator_env: dict[str, str] | None = None,
    users: int = 1,
    keep_logs: bool = False,
) -> AsyncIterator[Deployment]:
    """A fresh isolated tablesync (no processes yet); everything it made is
    removed on exit, and its logs too unless the block failed or ``keep_logs``."""
    tag = uuid.uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"tablesync-bench-{name}-"))
    dbs = Databases(infra, tag)
    failed = False
    dep: Deployment | None = None
    await wait_for_headroom(infra)
    try:
        async with Processes() as procs:
            state_dsn = await dbs.create("state", template=state_template)
            bc_dsn = await dbs.create("bc", template=bc_template)
            dv_dsn = await dbs.create("dv", template=dv_template)
            if state_template is None:
                await migrate(state_dsn)
            dep = Deployment(
                infra=infra,
                workdir=workdir,
                procs=procs,
                dbs=dbs,
                prefix=f"bench{tag}.",
                state_dsn=state_dsn,
                bc_dsn=bc_dsn,
                dv_dsn=dv_dsn,
                sync=dict(sync or {}),
                emulator_env=dict(emulator_env or {}),
                users=users,
            )
            dep.pool = await create_pool(state_dsn, max_size=4)
            try:
                yield dep
            finally:
                await dep.pool.close()
    except BaseException:
        failed = True
        raise
    finally:
        try:
            if dep is not None:
                with contextlib.suppress(Exception):
                    await dep.delete_topics()
            await dbs.drop_all()
        finally:
            if failed or keep_logs:
                print(f"bench {name}: logs kept in {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
