"""One running emulator: its configuration, its service, and the shared mutable state."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import structlog

from tablesync.core.events import Side
from tablesync.emulators.common.custom import Customizations, load_customizations
from tablesync.emulators.common.faults import Faults
from tablesync.emulators.common.limiter import Protection, RealLimits, current_cost
from tablesync.emulators.common.listing import ShortListing
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.problems import ApiProblem, ErrorStyle, Kind
from tablesync.emulators.common.sql import Executor, TableSpec
from tablesync.emulators.common.stats import Stats
from tablesync.emulators.common.writes import db_problem
from tablesync.settings import Settings

__all__ = ["EmulatorConfig", "Runtime", "Service", "Tuning", "handle_safely"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    dsn: str
    token: str
    extra_tokens: tuple[str, ...] = ()
    """Bearer tokens accepted besides ``token``: each is a user with limits of its own."""
    requests_per_window: int = 6000
    window_s: float = 5.0
    max_page_size: int = 5000
    pool_size: int = 10
    untracked: frozenset[str] = frozenset()
    """Dataverse entity sets served without change tracking (every one has it otherwise)."""
    change_retention_s: float = 7 * 86400.0
    """How long a Dataverse delta token stays valid: the organization's
    ``ExpireChangeTrackingInDays``, 7 by default."""
    real_limits: RealLimits | None = None
    """The documented concurrency, execution time, latency and per-record cost on top
    of the request budget (``limiter.py``); off unless set."""
    custom: Customizations = field(default_factory=Customizations.none)
    """The custom tables and columns served besides the catalog's (``custom.py``)."""
    bc_companies: tuple[str, ...] = ()
    """BC: the names of the environment's companies; one, CRONUS USA, Inc., when empty."""

    @classmethod
    def from_settings(
        cls, settings: Settings, side: Side, token: str | None = None
    ) -> EmulatorConfig:
        emulator = settings.emulator
        budget = emulator.requests_per_window
        real: RealLimits | None = None
        if emulator.real_limits:
            budget, real = RealLimits.documented(
                side,
                window_s=emulator.window_s,
                latency_s=emulator.latency_ms / 1000,
                record_cost_s=emulator.record_cost_ms / 1000,
            )
        return cls(
            dsn=settings.emulator_dsn(side),
            token=token if token is not None else emulator.token.get_secret_value(),
            extra_tokens=tuple(t.get_secret_value() for t in emulator.extra_tokens),
            requests_per_window=budget,
            window_s=emulator.window_s,
            max_page_size=emulator.max_page_size,
            untracked=frozenset(emulator.untracked_tables),
            change_retention_s=emulator.change_retention_s,
            real_limits=real,
            custom=load_customizations(emulator.custom),
            bc_companies=tuple(emulator.bc_companies),
        )


@dataclass(slots=True)
class Tuning:
    """What tests may change on a running emulator through the control API."""

    max_page_size: int
    untracked: set[str] = field(default_factory=set)
    """Dataverse: entity sets whose ``ChangeTrackingEnabled`` is false."""
    change_retention_s: float = 7 * 86400.0
    expired_before: datetime | None = None
    """Dataverse: delta tokens issued before this moment are answered as expired."""
    short_listing: ShortListing | None = None
    """An injected short read of the id listings (``listing.ShortListing``)."""


class Service(Protocol):
    """One API (BC or Dataverse) over the emulator's database."""

    side: Side
    style: ErrorStyle
    roots: tuple[str, ...]
    """The paths the API is served under, e.g. ``/api/data/v9.2``."""
    specs: tuple[TableSpec, ...]

    async def prepare(self, db: Executor) -> None:
        """Make the rows every database of this API has (company, integration user)."""
        ...

    async def reset(self, db: Executor) -> None:
        """Empty the tables ``truncate_all`` of the specs does not reach (BC's further
        companies); before ``prepare`` makes the baseline rows again."""
        ...

    async def handle(self, request: ApiRequest, db: Executor) -> ApiResponse: ...


async def handle_safely(service: Service, request: ApiRequest, db: Executor) -> ApiResponse:
    """``service.handle`` with refusals and database errors turned into API errors.

    Under the real limits a write that succeeded counts its records against the
    request's cost: one, unless the handler counted them itself (a bulk message); a
    ``$batch`` is the sum of its parts."""
    cost = current_cost()
    if cost is None:
        return await _handle(service, request, db)
    before = cost.records
    response = await _handle(service, request, db)
    if (
        response.status < 400
        and request.method != "GET"
        and cost.records == before
        and not request.path.rstrip("/").endswith("$batch")
    ):
        cost.records += 1
    return response


async def _handle(service: Service, request: ApiRequest, db: Executor) -> ApiResponse:
    try:
        return await service.handle(request, db)
    except ApiProblem as refusal:
        return service.style.response(refusal)
    except asyncpg.PostgresError as exc:
        mapped = db_problem(exc)
        if mapped is not None:
            return service.style.response(mapped)
        log.error("emulator_database_error", error=type(exc).__name__, detail=str(exc))
        return service.style.response(
            ApiProblem(Kind.INTERNAL, "An unexpected database error occurred.", status=500)
        )
    except Exception as exc:
        # Where it failed, never the locals: they hold the request and its token.
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        log.error(
            "emulator_handler_failed",
            error=type(exc).__name__,
            detail=str(exc)[:200],
            where=" < ".join(
                f"{f.name}@{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames)
            ),
        )
        return service.style.response(
            ApiProblem(Kind.INTERNAL, "An unexpected error occurred.", status=500)
        )


@dataclass(slots=True)
class Runtime:
    config: EmulatorConfig
    service: Service
    tuning: Tuning
    protection: Protection
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    pool: Any = None
    """The asyncpg pool, once the app has started."""

    @classmethod
    def create(cls, config: EmulatorConfig, service: Service, tuning: Tuning) -> Runtime:
        return cls(
            config=config,
            service=service,
            tuning=tuning,
            protection=Protection(config.requests_per_window, config.window_s, config.real_limits),
        )

    @property
    def db(self) -> Executor:
        if self.pool is None:
            raise RuntimeError("the emulator has not started")
        pool: Executor = self.pool
        return pool
