"""One isolated tablesync on the suite's own Kafka and PostgreSQL: both API
emulators and every service as separate processes, an OAuth token endpoint
for the Dataverse side, and the suite's mappings loaded.

The services run with secrets everywhere a deployment has them — a database
URL with a password, a client secret, bearer tokens, an admin token — so the
logs can be searched for them afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from tablesync.adapters.kafka import Topics
from tablesync.adapters.postgres import migrate
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.core.events import Side
from tablesync.emulators.common.server import BackgroundServer
from tests.faults.infra import FaultInfra, free_ports
from tests.faults.procs import Proc, Supervisor
from tests.faults.scope import MAPPINGS_DOCUMENT, TABLES
from tests.faults.sides import SideApi
from tests.faults.tokens import token_app

__all__ = [
    "TRANSIENT_DB",
    "CaptureLease",
    "LeaseTake",
    "Pipeline",
    "Tuning",
    "apply_name",
    "capture_name",
    "lease_name",
    "open_pipeline",
    "wait_until",
]

T = TypeVar("T")
CLIENT_ID = "tablesync-faults"
TOPIC_PREFIX = "faults."
MAPPING_NAMES = tuple(t.mapping for t in TABLES)
# What the state database answers while it restarts ("shutting down",
# "terminating connection due to administrator command", refused connections),
# and a pooled connection the server terminated mid-statement, back in the pool
# with its protocol state half-way ("cannot switch to state 12; another
# operation (2) is in progress", MagicStack/asyncpg#784): the services wait
# these out too (adapters/transient.py).
TRANSIENT_DB = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
)

# Where a process's log starts again (after a line a kill may have cut short).
_LOG_START = re.compile(rb"--- start (\d+)[, ]")
_LEASE_ROW = (
    "SELECT holder_label, epoch, taken_at, expires_at > now() AS live "
    "FROM singleton_leases WHERE name = $1"
)


@dataclass(frozen=True)
class Tuning:
    """The services' timing: short, so a run covers many cycles of each."""

    poll_interval_s: float = 0.5
    poll_overlap_s: float = 1.0
    delete_scan_interval_s: float = 2.0
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 2.0
    # The look-back re-reads what a late commit left behind the watermark; it
    # comes round more often than the settle window is long, so a pipeline that
    # settled has had one, and reaches further back than a late commit is late.
    lookback_s: float = 120.0
    lookback_interval_s: float = 4.0
    # Several apply instances per mapping: an open intent may be settled by an
    # instance other than the one that announced it, so it must outlast the
    # longest a live instance takes from announcing a create to writing it —
    # frozen past its session timeout while its write waits out a 429 storm.
    intent_timeout_s: float = 60.0
    partitions: int = 3
    # Members of each mapping's apply group, each its own process: partitions
    # move between them on every start, stop and stall.
    apply_instances: int = 1
    # Processes of each side's capture: one holds the side's lease and works,
    # the others stand by to take it over.
    capture_instances: int = 1
    # The singletons' leases, given to every process (the product's defaults,
    # spelled out: the takeover bound the suite holds capture to is theirs).
    lease_ttl_s: float = 10.0
    lease_renew_s: float = 2.0

    @property
    def takeover_bound_s(self) -> float:
        """How long after its holder's last renewal a standby takes a lease over
        at the latest (``runtime.lease``)."""
        return self.lease_ttl_s + self.lease_renew_s

    @property
    def takeover_margin_s(self) -> float:
        """What the suite allows beyond that bound: two more tries of the
        standby. On a loaded machine the statement that takes the lease, the
        process's wake-up and the log line that says so take a moment each: a
        full run beside other work measured 13.9 s against a bound of 12 s."""
        return 2 * self.lease_renew_s


def apply_name(mapping: str, instance: int) -> str:
    """The process name of one apply instance (counted from 1)."""
    return f"apply-{mapping}-{instance}"


def capture_name(side: Side, instance: int) -> str:
    """The process name of one capture instance of ``side`` (counted from 1)."""
    return f"capture-{side}-{instance}"


def lease_name(side: Side) -> str:
    """The row of ``singleton_leases`` the side's capture holds (composition)."""
    return f"capture.{side}"


@dataclass(frozen=True)
class CaptureLease:
    """The side's lease as the database has it: which process holds it now
    (None: expired, or held by a process that is gone), in which epoch and
    since when (the database's clock)."""

    holder: Proc | None
    label: str
    epoch: int
    taken_at: datetime


@dataclass(frozen=True, order=True)
class LeaseTake:
    """A capture process taking its side's lease, as it logged it
    (``lease_taken``): when, which epoch, and which process (``name#start``)."""

    at: datetime
    epoch: int
    process: str


async def wait_until(
    probe: Callable[[], Awaitable[T]], *, timeout_s: float, what: str, every_s: float = 0.2
) -> T:
    """Polls ``probe`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}: {last!r}")
        await asyncio.sleep(every_s)


@dataclass
class Pipeline:
    infra: FaultInfra
    run_dir: Path
    tuning: Tuning
    supervisor: Supervisor
    ports: dict[str, int]
    token_url: str
    pool: Any
    apis: dict[Side, SideApi]
    topics: Topics = field(default_factory=lambda: Topics(prefix=TOPIC_PREFIX))

    # processes

    @property
    def emulators(self) -> dict[Side, Proc]:
        return {"bc": self.supervisor["emulator-bc"], "dataverse": self.supervisor["emulator-dv"]}

    def applies(self, mapping: str) -> list[Proc]:
        """Every apply instance of ``mapping``."""
        return [
            self.supervisor[apply_name(mapping, n)]
            for n in range(1, self.tuning.apply_instances + 1)
        ]

    def apply(self, mapping: str) -> Proc:
        """The mapping's first apply instance."""
        return self.supervisor[apply_name(mapping, 1)]

    async def solo_apply(self, mapping: str) -> Proc:
        """The mapping's first apply instance, the others stopped: a scenario
        that stops or crashes "the" apply means every instance of the mapping
        (the next ``ensure_running`` brings them back)."""
        first, *others = self.applies(mapping)
        for proc in others:
            await proc.stop()
        return first

    def captures(self, side: Side) -> list[Proc]:
        """Every capture instance of ``side``: the lease's holder and its standbys."""
        return [
            self.supervisor[capture_name(side, n)]
            for n in range(1, self.tuning.capture_instances + 1)
        ]

    def _by_label(self, side: Side, label: str) -> Proc | None:
        """The running capture process a lease's holder label (host:pid, as
        ``adapters.postgres.lock`` writes it) names."""
        host, _, pid = label.rpartition(":")
        if host != socket.gethostname():
            return None
        for proc in self.captures(side):
            if proc.running and proc.process is not None and str(proc.process.pid) == pid:
                return proc
        return None

    def _lease_of(self, side: Side, rows: list[asyncpg.Record]) -> CaptureLease | None:
        if not rows:
            return None
        row = rows[0]
        label = str(row["holder_label"])
        return CaptureLease(
            self._by_label(side, label) if row["live"] else None,
            label,
            int(row["epoch"]),
            row["taken_at"],
        )

    async def capture_lease(self, side: Side) -> CaptureLease | None:
        """The side's lease now; waits out a restart of the state database."""
        return self._lease_of(side, await self.query(_LEASE_ROW, lease_name(side)))

    async def capture_lease_now(self, side: Side, timeout_s: float) -> CaptureLease | None:
        """The side's lease, or None when the database does not answer within
        ``timeout_s``: for timing a takeover, where a retry's backoff would
        count against the standby."""
        try:
            async with asyncio.timeout(timeout_s):
                rows = await self.pool.fetch(_LEASE_ROW, lease_name(side))
        except (*TRANSIENT_DB, TimeoutError):
            return None
        return self._lease_of(side, rows)

    async def capture_holder(self, side: Side) -> Proc | None:
        """The capture process that holds the side's lease now, if one does."""
        lease = await self.capture_lease(side)
        return lease.holder if lease is not None else None

    def lease_takes(self, side: Side) -> list[LeaseTake]:
        """Every take of the side's lease its capture processes logged, in time order."""
        takes: list[LeaseTake] = []
        for proc in self.captures(side):
            start = 0
            with contextlib.suppress(FileNotFoundError), proc.log_path.open("rb") as log:
                for line in log:
                    if (started := _LOG_START.search(line)) is not None:
                        start = int(started.group(1))
                    elif b'"lease_taken"' in line:
                        with contextlib.suppress(ValueError, KeyError):
                            event = json.loads(line)
                            takes.append(
                                LeaseTake(
                                    datetime.fromisoformat(event["timestamp"]),
                                    int(event["epoch"]),
                                    f"{proc.name}#{start}",
                                )
                            )
        return sorted(takes)

    async def solo_capture(self, side: Side) -> Proc:
        """The side's first capture instance, holding the lease, its standbys
        stopped: a scenario that stops or kills "the" capture means the side's
        only one (the next ``ensure_running`` brings the others back)."""
        first, *others = self.captures(side)
        for proc in others:
            await proc.stop()
        if not first.running:
            await first.start()

        async def holds() -> bool:
            return await self.capture_holder(side) is first

        await wait_until(holds, timeout_s=120, what=f"{first.name} to hold the lease")
        return first

    @property
    def coordinator(self) -> Proc:
        return self.supervisor["coordinator"]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def services(self) -> list[Proc]:
        return [p for p in self.supervisor.procs.values() if not p.name.startswith("emulator")]

    def environment(self) -> dict[str, str]:
        s = self.infra.secrets
        t = self.tuning
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env.update(
            {
                "TABLESYNC_DATABASE_URL": self.infra.state_dsn,
                "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap,
                "TABLESYNC_TOPIC_PREFIX": TOPIC_PREFIX,
                "TABLESYNC_LOG_FORMAT": "json",
                # Every record's decision (ids only), for chasing a run that did not settle.
                "TABLESYNC_LOG_LEVEL": "debug",
                "TABLESYNC_BC__BASE_URL": f"http://127.0.0.1:{self.ports['bc']}/BC/api/v2.0",
                "TABLESYNC_BC__STATIC_TOKEN": s.bc_token,
                "TABLESYNC_DATAVERSE__BASE_URL": (
                    f"http://127.0.0.1:{self.ports['dataverse']}/api/data/v9.2"
                ),
                "TABLESYNC_DATAVERSE__TOKEN_URL": self.token_url,
                "TABLESYNC_DATAVERSE__CLIENT_ID": CLIENT_ID,
                "TABLESYNC_DATAVERSE__CLIENT_SECRET": s.dv_client_secret,
                "TABLESYNC_DATAVERSE__SCOPE": "https://faults.example/.default",
                "TABLESYNC_ADMIN_HOST": "127.0.0.1",
                "TABLESYNC_ADMIN_PORT": str(self.ports["admin"]),
                "TABLESYNC_ADMIN_TOKEN": s.admin_token,
                "TABLESYNC_SYNC__POLL_INTERVAL_S": str(t.poll_interval_s),
                "TABLESYNC_SYNC__POLL_OVERLAP_S": str(t.poll_overlap_s),
                "TABLESYNC_SYNC__LOOKBACK_S": str(t.lookback_s),
                "TABLESYNC_SYNC__LOOKBACK_INTERVAL_S": str(t.lookback_interval_s),
                "TABLESYNC_SYNC__DELETE_SCAN_INTERVAL_S": str(t.delete_scan_interval_s),
                "TABLESYNC_SYNC__RETRY_BACKOFF_S": str(t.retry_backoff_s),
                "TABLESYNC_SYNC__RETRY_BACKOFF_MAX_S": str(t.retry_backoff_max_s),
                "TABLESYNC_SYNC__INTENT_TIMEOUT_S": str(t.intent_timeout_s),
                "TABLESYNC_SYNC__PARTITIONS": str(t.partitions),
                "TABLESYNC_SYNC__LEASE_TTL_S": str(t.lease_ttl_s),
                "TABLESYNC_SYNC__LEASE_RENEW_S": str(t.lease_renew_s),
                "TABLESYNC_EMULATOR__BC_DATABASE_URL": self.infra.emulator_dsn("bc"),
                "TABLESYNC_EMULATOR__DATAVERSE_DATABASE_URL": self.infra.emulator_dsn("dataverse"),
                "TABLESYNC_EMULATOR__REQUESTS_PER_WINDOW": "1000000",
            }
        )
        return env

    async def start_emulator(self, side: Side) -> None:
        await self.emulators[side].start()
        await wait_until(self.apis[side].answers, timeout_s=60, what=f"the {side} emulator")

    async def ensure_running(self) -> None:
        """Every process up again (the end of the fault phase), each one past its
        start-up: a service still connecting is not one that is running."""
        for side in ("bc", "dataverse"):
            if not self.emulators[side].running:
                await self.start_emulator(side)
        started: list[Proc] = []
        for proc in self.services():
            if proc.paused:
                proc.resume()
            if proc.armed is not None:
                await proc.stop()
            if not proc.running:
                await proc.start()
                started.append(proc)

        async def up() -> bool:
            return all(p.started_up() for p in started)

        names = ", ".join(p.name for p in started)
        await wait_until(up, timeout_s=120, what=f"{names} to start again")

    async def cli(self, args: list[str], timeout_s: float = 120.0) -> tuple[int, str]:
        """``tablesync <args>`` as an operator runs it: its exit code and what it
        printed; everything it printed also goes to the CLI log."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tablesync.cli",
            *args,
            env=self.environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
            code = process.returncode
        except TimeoutError:
            process.kill()
            out, _ = await process.communicate()
            code = -1
        self.supervisor.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.supervisor.log_dir / "cli.log").open("ab") as log:
            log.write(out)
        return (-1 if code is None else code), out.decode(errors="replace")

    # the state database, which may be restarting

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        for attempt in range(60):
            try:
                rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
                return rows
            except TRANSIENT_DB:
                await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
        raise AssertionError("the state database stayed unreachable")

    async def is_coupled(self, mapping: str, side: Side, record_id: str) -> bool:
        column = "bc_id" if side == "bc" else "dv_id"
        rows = await self.query(
            f"SELECT 1 FROM couplings WHERE mapping = $1 AND {column} = $2::uuid",
            mapping,
            record_id,
        )
        return bool(rows)

    async def checkpoints_ready(self) -> bool:
        tables = 2 * len(TABLES)
        rows = await self.query("SELECT count(*) AS n FROM capture_checkpoints")
        return bool(rows[0]["n"] == tables)


async def _start_services(p: Pipeline) -> None:
    env = p.environment()
    add = p.supervisor.add
    secrets = p.infra.secrets
    bc_env = {**env, "TABLESYNC_EMULATOR__TOKEN": secrets.bc_token}
    dv_env = {**env, "TABLESYNC_EMULATOR__TOKEN": secrets.dv_token}
    add("emulator-bc", ["emulator", "bc", "--port", str(p.ports["bc"])], bc_env)
    add("emulator-dv", ["emulator", "dataverse", "--port", str(p.ports["dataverse"])], dv_env)
    await asyncio.gather(p.start_emulator("bc"), p.start_emulator("dataverse"))
    for api in p.apis.values():
        await api.discover()
    sides: tuple[Side, Side] = ("bc", "dataverse")
    for side in sides:
        for n in range(1, p.tuning.capture_instances + 1):
            add(capture_name(side, n), ["run", "capture", "--side", side], env)
    for name in MAPPING_NAMES:
        for n in range(1, p.tuning.apply_instances + 1):
            add(apply_name(name, n), ["run", "apply", "--mapping", name], env)
    add("coordinator", ["run", "coordinator"], env)
    add("admin", ["run", "admin"], env)
    for proc in p.services():
        await proc.start()
    await wait_until(p.checkpoints_ready, timeout_s=120, what="capture to poll every table")


@contextlib.asynccontextmanager
async def open_pipeline(
    infra: FaultInfra, run_dir: Path, tuning: Tuning, rng: random.Random
) -> AsyncIterator[Pipeline]:
    """The running pipeline; every process and server is stopped on exit, even after a failure."""
    await migrate(infra.state_dsn)
    # No connection floor: the pool need not reconnect by itself while PostgreSQL restarts.
    pool = await create_pool(infra.state_dsn, min_size=0, max_size=4)
    supervisor = Supervisor(run_dir / "logs")
    s = infra.secrets
    token_server = BackgroundServer(token_app(CLIENT_ID, s.dv_client_secret, s.dv_token))
    bc_port, dv_port, admin_port = free_ports(3)
    apis: dict[Side, SideApi] = {
        "bc": SideApi(
            "bc", f"http://127.0.0.1:{bc_port}", s.bc_token, rng=random.Random(rng.random())
        ),
        "dataverse": SideApi(
            "dataverse", f"http://127.0.0.1:{dv_port}", s.dv_token, rng=random.Random(rng.random())
        ),
    }
    try:
        await MappingStore(pool).replace_all(MAPPINGS_DOCUMENT)
        token_url = await token_server.start() + "/oauth2/v2.0/token"
        pipeline = Pipeline(
            infra,
            run_dir,
            tuning,
            supervisor,
            {"bc": bc_port, "dataverse": dv_port, "admin": admin_port},
            token_url,
            pool,
            apis,
        )
        await _start_services(pipeline)
        yield pipeline
    finally:
        await supervisor.close()
        await token_server.stop()
        for api in apis.values():
            await api.aclose()
        await pool.close()
