"""The admin API's endpoints: what BC's Integration Table Mappings, Integration
Synchronization Jobs and Coupled Data Synchronization Errors pages show, plus
couplings, consumer lag, metrics and the two operator commands.

Each endpoint is declared once with the models it reads and writes; the app's
routes and the OpenAPI document are both built from ``ENDPOINTS``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tablesync import metrics
from tablesync.adapters.postgres.admin_queries import AdminQueries
from tablesync.adapters.postgres.couplings import CouplingStore
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.admin.lagwatch import LagMonitor
from tablesync.admin.schemas import (
    CoupleRequest,
    CouplingOut,
    CouplingPath,
    CouplingsQuery,
    ErrorOut,
    ErrorsQuery,
    FieldProblem,
    FullSyncRequest,
    HealthOut,
    JobErrorOut,
    JobOut,
    JobPath,
    JobsQuery,
    LagHistoryOut,
    LagHistoryQuery,
    LagOut,
    LagPoint,
    LagSeries,
    MappingChange,
    MappingDetailOut,
    MappingOut,
    MappingPath,
    RunAccepted,
    RunOut,
    RunPath,
    RunProgressOut,
    RunsQuery,
    SyncModifiedRequest,
    UncoupledOut,
)
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.mappings import MappingSet
from tablesync.errors import CommandRefused, MappingError
from tablesync.runtime.operations import Operations

__all__ = ["ENDPOINTS", "STATIC_DIR", "AdminContext", "Endpoint", "Problem"]

log = structlog.get_logger()

STATIC_DIR = Path(__file__).parent / "static"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
# The state database is away (restarting, unreachable): 503, not 500.
UNAVAILABLE_DATABASE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)
Handler = Callable[["AdminContext", Request], Awaitable[Response]]


class Problem(Exception):
    """A refusal with its status, rendered as an ``ErrorOut``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fields: list[FieldProblem] | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorOut(error=message, fields=fields, run_id=run_id)

    def response(self) -> Response:
        content = self.body.model_dump(mode="json", exclude_none=True)
        return Response(orjson.dumps(content), self.status, media_type="application/json")


@dataclass
class AdminContext:
    """What the handlers share: the state database, the operator commands, lag."""

    pool: Any
    operations: Operations
    lag: LagMonitor
    queries: AdminQueries = field(init=False)
    jobs: JobStore = field(init=False)
    couplings: CouplingStore = field(init=False)
    mappings: MappingStore = field(init=False)

    def __post_init__(self) -> None:
        self.queries = AdminQueries(self.pool)
        self.jobs = JobStore(self.pool)
        self.couplings = CouplingStore(self.pool)
        self.mappings = MappingStore(self.pool)

    async def mapping_set(self) -> MappingSet:
        try:
            return await self.mappings.load()
        except LookupError as exc:
            raise Problem(409, str(exc)) from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    status: int = 200
    response: type[BaseModel] | None = None
    many: bool = False
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: type[BaseModel] | None = None
    media_type: str = "application/json"
    public: bool = False
    description: str = ""


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: str, path: str, summary: str, tag: str, **options: Any
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(Endpoint(method, path, handler, summary, tag, **options))
        return handler

    return register


# Parsing and replying


def _problems(error: ValidationError, where: str) -> list[FieldProblem]:
    problems = []
    for e in error.errors():
        name = ".".join(str(part) for part in e["loc"]) or where
        problems.append(FieldProblem(field=name, message=e["msg"]))
    return problems


def _invalid(error: ValidationError, where: str) -> Problem:
    problems = _problems(error, where)
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
    return Problem(400, f"invalid {where}: {summary}", fields=problems)


def query_of(request: Request, model: type[M]) -> M:
    values: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in values:
            raise Problem(400, f"invalid query: {key} is given more than once")
        values[key] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _invalid(exc, "query") from None


def path_of(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(request.path_params)
    except ValidationError as exc:
        raise _invalid(exc, "path") from None


async def body_of(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None


def reply(value: BaseModel | Sequence[BaseModel], status: int = 200) -> Response:
    if isinstance(value, BaseModel):
        content: object = value.model_dump(mode="json")
    else:
        content = [v.model_dump(mode="json") for v in value]
    return Response(orjson.dumps(content), status, media_type="application/json")


def _known(mappings: MappingSet, name: str, status: int = 400) -> None:
    if name not in mappings:
        known = ", ".join(mappings.names())
        raise Problem(status, f"unknown mapping {name!r} (known: {known})")


def _ctx(request: Request) -> AdminContext:
    ctx: AdminContext = request.app.state.admin
    return ctx


# Health, documentation, metrics, dashboard


@endpoint("GET", "/healthz", "Liveness probe", "service", response=HealthOut, public=True)
async def healthz(ctx: AdminContext, request: Request) -> Response:
    return reply(HealthOut())


@endpoint(
    "GET",
    "/openapi.json",
    "This API's OpenAPI 3.1 document",
    "service",
    description="Generated from the same models that parse requests and shape responses.",
)
async def openapi_json(ctx: AdminContext, request: Request) -> Response:
    document: dict[str, object] = request.app.state.openapi
    return Response(orjson.dumps(document), media_type="application/json")


@endpoint(
    "GET",
    "/metrics",
    "Prometheus metrics",
    "service",
    media_type="text/plain",
    description="Lag from Kafka and job counters from PostgreSQL are read at each scrape; "
    "a source that cannot be read is reported by tablesync_admin_source_up.",
)
async def metrics_endpoint(ctx: AdminContext, request: Request) -> Response:
    lag, deadletters, outcomes, durations = await asyncio.gather(
        _quietly("kafka", ctx.lag.report()),
        _quietly("kafka", ctx.lag.deadletter_messages()),
        _quietly("database", ctx.queries.outcome_totals()),
        _quietly("database", ctx.queries.job_durations(metrics.JOB_DURATION_BUCKETS)),
    )
    snapshot = metrics.StateSnapshot(lag, deadletters, outcomes, durations)
    return Response(metrics.render(snapshot), media_type=metrics.CONTENT_TYPE)


async def _quietly(source: str, read: Awaitable[T]) -> T | None:
    try:
        return await read
    except (KafkaError, OSError, TimeoutError, *UNAVAILABLE_DATABASE) as exc:
        log.warning("metrics_source_failed", source=source, error=f"{type(exc).__name__}: {exc}")
        return None


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    # The token may arrive once as ?token=; it must never leave in a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@endpoint(
    "GET", "/", "The dashboard page", "service", media_type="text/html", public=True, response=None
)
async def dashboard(ctx: AdminContext, request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


# Integration table mappings


@endpoint(
    "GET",
    "/api/mappings",
    "Integration table mappings in dependency order, with each one's last job "
    "and, apart, its last continuous activity",
    "mappings",
    response=MappingOut,
    many=True,
)
async def list_mappings(ctx: AdminContext, request: Request) -> Response:
    mappings = await ctx.mapping_set()
    last = await ctx.queries.last_jobs()
    return reply([MappingOut.of(m, last.get(m.name)) for m in mappings.mappings])


@endpoint(
    "GET",
    "/api/mappings/{name}",
    "One mapping with its field mappings",
    "mappings",
    response=MappingDetailOut,
    params=MappingPath,
    errors=(404,),
)
async def get_mapping(ctx: AdminContext, request: Request) -> Response:
    name = path_of(request, MappingPath).name
    mappings = await ctx.mapping_set()
    _known(mappings, name, 404)
    last = await ctx.queries.last_jobs()
    return reply(MappingDetailOut.detail(mappings.get(name), last.get(name)))


@endpoint(
    "PATCH",
    "/api/mappings/{name}",
    "Change a mapping's direction, filters or sync-only-coupled",
    "mappings",
    response=MappingOut,
    params=MappingPath,
    body=MappingChange,
    errors=(400, 404),
    description="Apply picks the change up from its next batch. "
    "An invalid direction or filter is refused with the reason and nothing is stored.",
)
async def change_mapping(ctx: AdminContext, request: Request) -> Response:
    name = path_of(request, MappingPath).name
    change = await body_of(request, MappingChange)
    given = change.model_dump(exclude_unset=True)
    if not given:
        raise Problem(
            400, "nothing to change: give one of " + ", ".join(MappingChange.model_fields)
        )
    try:
        changed = await ctx.mappings.change(
            name,
            direction=change.direction,
            sync_only_coupled=change.sync_only_coupled,
            table_filter=change.table_filter,
            integration_table_filter=change.integration_table_filter,
        )
    except KeyError as exc:
        raise Problem(404, str(exc.args[0])) from None
    except LookupError as exc:
        raise Problem(409, str(exc)) from None
    except MappingError as exc:
        raise Problem(400, f"invalid change of {name}: {exc}") from None
    log.info("admin_mapping_changed", mapping=name, fields=sorted(given))
    return reply(MappingOut.of(changed))


# Integration synchronization jobs and their errors


@endpoint(
    "GET",
    "/api/jobs",
    "Integration synchronization jobs, newest first, with their counts",
    "jobs",
    response=JobOut,
    many=True,
    query=JobsQuery,
    errors=(400,),
)
async def list_jobs(ctx: AdminContext, request: Request) -> Response:
    q = query_of(request, JobsQuery)
    jobs = await ctx.queries.jobs(
        mapping=q.mapping,
        run_id=str(q.run) if q.run else None,
        kind=q.kind,
        status=q.status,
        include_empty_continuous=q.include_empty_continuous,
        limit=q.limit,
    )
    return reply([JobOut.of(j) for j in jobs])


@endpoint(
    "GET",
    "/api/jobs/{job_id}",
    "One job with its counts",
    "jobs",
    response=JobOut,
    params=JobPath,
    errors=(400, 404),
)
async def get_job(ctx: AdminContext, request: Request) -> Response:
    job_id = str(path_of(request, JobPath).job_id)
    job = await ctx.jobs.totals(job_id)
    if job is None:
        raise Problem(404, f"no job {job_id}")
    return reply(JobOut.of(job))


@endpoint(
    "GET",
    "/api/jobs/{job_id}/errors",
    "The errors of one job, newest first",
    "jobs",
    response=JobErrorOut,
    many=True,
    params=JobPath,
    query=ErrorsQuery,
    errors=(400, 404),
)
async def job_errors(ctx: AdminContext, request: Request) -> Response:
    job_id = str(path_of(request, JobPath).job_id)
    q = query_of(request, ErrorsQuery)
    if await ctx.jobs.totals(job_id) is None:
        raise Problem(404, f"no job {job_id}")
    errors = await ctx.jobs.errors(job_id=job_id, limit=q.limit)
    return reply([JobErrorOut.of(e) for e in errors])


# Couplings


@endpoint(
    "GET",
    "/api/couplings",
    "Couplings: which BC record is which Dataverse row",
    "couplings",
    response=CouplingOut,
    many=True,
    query=CouplingsQuery,
    errors=(400,),
)
async def list_couplings(ctx: AdminContext, request: Request) -> Response:
    q = query_of(request, CouplingsQuery)
    rows = await ctx.couplings.listing(q.mapping, search=q.search or None, limit=q.limit)
    return reply([CouplingOut.of(r) for r in rows])


@endpoint(
    "POST",
    "/api/couplings",
    "Couple a BC record with a Dataverse row",
    "couplings",
    status=201,
    response=CouplingOut,
    body=CoupleRequest,
    errors=(400, 404),
    description="Neither record is changed; the next change of either one syncs.",
)
async def couple(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, CoupleRequest)
    _known(await ctx.mapping_set(), body.mapping, 404)
    bc_id, dv_id = str(body.bc_id), str(body.dataverse_id)
    empty = Stamp(None, None)
    await ctx.couplings.couple(Coupling(body.mapping, bc_id, dv_id, None, empty, empty), None)
    rows = await ctx.couplings.listing(body.mapping, search=bc_id, limit=1)
    if not rows:
        raise Problem(
            409, f"{body.mapping}: the coupling of bc record {bc_id} was removed meanwhile"
        )
    log.info("admin_coupled", mapping=body.mapping, bc_id=bc_id, dataverse_id=dv_id)
    return reply(CouplingOut.of(rows[0]), 201)


@endpoint(
    "DELETE",
    "/api/couplings/{mapping}/{side}/{record_id}",
    "Remove the coupling of a record",
    "couplings",
    response=UncoupledOut,
    params=CouplingPath,
    errors=(400, 404),
    description="side is the side record_id belongs to; neither record is changed.",
)
async def uncouple(ctx: AdminContext, request: Request) -> Response:
    p = path_of(request, CouplingPath)
    removed = await ctx.couplings.uncouple(p.mapping, p.side, str(p.record_id))
    if removed is None:
        raise Problem(404, f"{p.mapping}: {p.side} record {p.record_id} is not coupled")
    log.info("admin_uncoupled", mapping=p.mapping, bc_id=removed.bc_id, dataverse_id=removed.dv_id)
    return reply(UncoupledOut(mapping=p.mapping, bc_id=removed.bc_id, dataverse_id=removed.dv_id))


# Consumer lag


@endpoint(
    "GET",
    "/api/lag",
    "Consumer lag per group, topic and partition, with totals per mapping",
    "lag",
    response=LagOut,
    errors=(503,),
    description="Measured from the offsets committed in Kafka; oldest_age_s is the age of "
    "the record at the committed offset when lag > 0.",
)
async def lag(ctx: AdminContext, request: Request) -> Response:
    return reply(LagOut.of(await ctx.lag.report()))


@endpoint(
    "GET",
    "/api/lag/history",
    "Lag per mapping over the last minutes, as sampled by this server",
    "lag",
    response=LagHistoryOut,
    query=LagHistoryQuery,
    errors=(400,),
)
async def lag_history(ctx: AdminContext, request: Request) -> Response:
    q = query_of(request, LagHistoryQuery)
    samples = ctx.lag.history(q.minutes)
    names = list(dict.fromkeys(name for s in samples for name in s.by_mapping))
    series = [
        LagSeries(
            mapping=name,
            points=[
                LagPoint(at=s.at, lag=s.by_mapping[name]) for s in samples if name in s.by_mapping
            ],
        )
        for name in names
    ]
    return reply(LagHistoryOut(sample_every_s=ctx.lag.sample_every_s, series=series))


# Runs: full synchronization and synchronize modified records


@endpoint(
    "GET",
    "/api/runs",
    "Recent runs, newest first",
    "runs",
    response=RunOut,
    many=True,
    query=RunsQuery,
    errors=(400,),
)
async def list_runs(ctx: AdminContext, request: Request) -> Response:
    q = query_of(request, RunsQuery)
    return reply([RunOut.of(r) for r in await ctx.jobs.runs(limit=q.limit)])


@endpoint(
    "POST",
    "/api/runs/full-sync",
    "Start a full synchronization",
    "runs",
    status=202,
    response=RunAccepted,
    body=FullSyncRequest,
    errors=(400, 409),
    description="Every mapping (or the ones named) in dependency order, creating and coupling "
    "uncoupled records. A second one while one runs is refused with 409 and the running run_id.",
)
async def full_sync(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, FullSyncRequest)
    mappings = await ctx.mapping_set()
    for name in body.mappings:
        _known(mappings, name)
    try:
        run_id = await ctx.operations.full_sync(
            mappings=body.mappings,
            keep_only_coupled_cleared=body.keep_only_coupled_cleared,
            requested_by="admin",
        )
    except CommandRefused as exc:
        raise Problem(409, str(exc), run_id=await ctx.queries.running_full_sync()) from None
    log.info("admin_run_requested", kind="full", run_id=run_id)
    return reply(RunAccepted(run_id=run_id, progress=f"/api/runs/{run_id}"), 202)


@endpoint(
    "POST",
    "/api/runs/sync-modified",
    "Synchronize modified records of every mapping or one",
    "runs",
    status=202,
    response=RunAccepted,
    body=SyncModifiedRequest,
    errors=(400,),
)
async def sync_modified(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, SyncModifiedRequest)
    if body.mapping is not None:
        _known(await ctx.mapping_set(), body.mapping)
    run_id = await ctx.operations.sync_modified(mapping=body.mapping, requested_by="admin")
    log.info("admin_run_requested", kind="modified", run_id=run_id, mapping=body.mapping)
    return reply(RunAccepted(run_id=run_id, progress=f"/api/runs/{run_id}"), 202)


@endpoint(
    "GET",
    "/api/runs/{run_id}",
    "A run's progress: its status and its jobs with their counts",
    "runs",
    response=RunProgressOut,
    params=RunPath,
    errors=(400, 404),
)
async def run_progress(ctx: AdminContext, request: Request) -> Response:
    run_id = str(path_of(request, RunPath).run_id)
    progress = await ctx.operations.progress(run_id)
    if progress is None:
        raise Problem(404, f"no run {run_id}")
    return reply(RunProgressOut.progress(progress))
