"""What the state contract suites share: one ``StateHarness`` per
implementation of the state ports, and builders of the rows they write.

Each suite is an abstract class whose tests take a ``state`` fixture; one
subclass gives it the in-memory stores (``memory_state``), another the
Postgres ones on a fresh, migrated database of their own (``postgres_state``,
from the integration suite's ``state_dsn``). A test module imports the
fixtures below by name so pytest finds them there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import yaml

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.memory import ConstraintViolation, MemoryDatabase, MemorySingleton
from tablesync.adapters.memory import memory_stores as build_memory_stores
from tablesync.adapters.postgres import PostgresLease, postgres_stores
from tablesync.adapters.postgres.pool import create_pool
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import BatchEffects, StatusChange
from tablesync.core.events import Side
from tablesync.ports.state import Singleton, StateStores
from tests.integration import conftest as integration

__all__ = [
    "ManualClock",
    "StateHarness",
    "continuous_job",
    "coupling",
    "default_document",
    "effects",
    "memory_state_fixture",
    "new_id",
    "postgres_state_fixture",
    "state_dsn",
    "state_template",
    "status",
]

state_template = integration.state_template
state_dsn = integration.state_dsn

MAPPINGS_FILE = default_mapping_file()
# Waiting for the database's clock to pass a moment: far more than any test asks.
ELAPSE_TIMEOUT_S = 30.0


class ManualClock:
    """A clock that moves only when told to, and by one microsecond per
    reading: like a real one, no two readings are equal, so a store that reads
    it twice where PostgreSQL's ``now()`` is one instant gets caught."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        self._now += timedelta(microseconds=1)
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@dataclass
class StateHarness:
    """One implementation of the state ports, with what a test needs beside them."""

    kind: str
    stores: StateStores
    integrity_error: type[BaseException]
    """What a write that breaks a constraint of the schema raises."""
    _now: Callable[[], Awaitable[datetime]]
    _elapse: Callable[[float], Awaitable[None]]
    _holder: Callable[[str, float], Singleton]
    _restart: Callable[[], Awaitable[None]]
    holders: list[Singleton] = field(default_factory=list)

    async def now(self) -> datetime:
        """The database's present moment (what its ``now()`` would be)."""
        return await self._now()

    async def elapse(self, seconds: float = 0.001) -> None:
        """Returns once ``seconds`` have passed for the database."""
        await self._elapse(seconds)

    def holder(self, name: str, *, ttl_s: float = 60.0) -> Singleton:
        """A new holder of the singleton ``name`` (released at the end of the test)."""
        h = self._holder(name, ttl_s)
        self.holders.append(h)
        return h

    async def restart(self) -> None:
        """What a restart of the database does to the singletons' holders: for
        PostgreSQL, their connections terminated (``pg_terminate_backend``);
        in memory, where holds are rows of the database, nothing."""
        await self._restart()


@pytest.fixture(name="memory_state")
def memory_state_fixture() -> StateHarness:
    clock = ManualClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    database = MemoryDatabase(clock)

    async def now() -> datetime:
        return database.now()

    async def elapse(seconds: float) -> None:
        clock.advance(seconds)

    async def restart() -> None:
        return None

    return StateHarness(
        "memory",
        build_memory_stores(database),
        ConstraintViolation,
        now,
        elapse,
        lambda name, ttl_s: MemorySingleton(database, name, ttl_s=ttl_s),
        restart,
    )


@pytest.fixture(name="postgres_state")
async def postgres_state_fixture(state_dsn: str) -> AsyncIterator[StateHarness]:
    pool = await create_pool(state_dsn, max_size=4)

    async def now() -> datetime:
        value: datetime = await pool.fetchval("SELECT now()")
        return value

    async def elapse(seconds: float) -> None:
        # Time passing is the condition waited for: the database's clock, read
        # until it shows the moment, not a sleep taken on trust.
        target = await now() + timedelta(seconds=seconds)
        step = max(min(seconds, 0.01), 0.001)
        for _ in range(int(ELAPSE_TIMEOUT_S / step) + 1):
            if await now() >= target:
                return
            await asyncio.sleep(step)
        raise TimeoutError(f"the database's clock did not reach {target}")

    async def restart() -> None:
        terminated = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'tablesync lease %'"
        )
        assert terminated, "no holder's connection to terminate"

    harness = StateHarness(
        "postgres",
        postgres_stores(pool),
        asyncpg.IntegrityConstraintViolationError,
        now,
        elapse,
        lambda name, ttl_s: PostgresLease(state_dsn, name, ttl_s=ttl_s),
        restart,
    )
    try:
        yield harness
    finally:
        for h in harness.holders:
            await h.release()
        await pool.close()


# Builders


def new_id() -> str:
    return str(uuid.uuid4())


def coupling(
    mapping: str = "CUSTOMER",
    *,
    bc_id: str | None = None,
    dv_id: str | None = None,
    bc_key: str | None = "10000",
    at: datetime | None = None,
    etag: str = 'W/"1"',
) -> Coupling:
    moment = at or datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    stamp = Stamp(moment, etag)
    return Coupling(mapping, bc_id or new_id(), dv_id or new_id(), bc_key, stamp, stamp)


def status(
    source_id: str,
    *,
    mapping: str = "CUSTOMER",
    side: Side = "bc",
    state: str = "failed",
    next_attempt_at: datetime | None = None,
    waiting_for: tuple[str, ...] = (),
    destination_id: str | None = None,
    job_id: str | None = None,
    event: bytes = b"event",
    attempts: int = 1,
) -> StatusChange:
    return StatusChange(
        mapping=mapping,
        source_side=side,
        source_id=source_id,
        status=state,
        reason="lookup" if state == "pending" else "api",
        message=f"{source_id} did not sync",
        destination_id=destination_id,
        next_attempt_at=next_attempt_at,
        job_id=job_id,
        event=event,
        waiting_for=waiting_for,
        attempts=attempts,
    )


def effects(mapping: str = "CUSTOMER", **parts: Any) -> BatchEffects:
    e = BatchEffects(mapping)
    for name, value in parts.items():
        setattr(e, name, value)
    return e


async def continuous_job(state: StateHarness, mapping: str = "CUSTOMER") -> str:
    job_id = new_id()
    await state.stores.jobs.continuous_job(job_id, mapping, "to_integration", await state.now())
    return job_id


def default_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(MAPPINGS_FILE.read_text())
    return document
