"""The admin API's endpoints: what BC's Integration Table Mappings, Integration
Synchronization Jobs and Coupled Data Synchronization Errors pages show, plus
couplings, consumer lag, metrics and the operator commands.

Each endpoint is declared once with the models it reads and writes; the app's
routes and the OpenAPI document are both built from ``ENDPOINTS``. Every
operation, and every read the CLI shares, goes through the application layer
(``tablesync.application.Operator``); its refusals become problems in one
place (``problem_of``), the same way for every endpoint."""

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
from tablesync.admin.lagwatch import LagMonitor
from tablesync.admin.schemas import (
    ActionOut,
    AnswerRequest,
    CoupleRecordsRequest,
    CoupleRequest,
    CouplingOut,
    CouplingPath,
    CouplingRunRequest,
    CouplingsQuery,
    DeleteRecordsRequest,
    ErrorOut,
    ErrorsQuery,
    FieldProblem,
    FindDeletedRequest,
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
    ProblemOut,
    ProblemsQuery,
    RecordLogOut,
    RecordLogQuery,
    RecordPath,
    RecordSelection,
    RunAccepted,
    RunOut,
    RunPath,
    RunProgressOut,
    RunsQuery,
    SyncModifiedRequest,
    UncoupledOut,
)
from tablesync.application import Operator
from tablesync.core.stored import Selection
from tablesync.errors import (
    AlreadyRunning,
    ApiError,
    CommandRefused,
    InvalidRequest,
    MappingError,
    NotFound,
    TablesyncError,
    UnknownMapping,
)
from tablesync.runtime.actions import ActionResult
from tablesync.runtime.health import Health

__all__ = ["ENDPOINTS", "STATIC_DIR", "AdminContext", "Endpoint", "Problem", "problem_of"]

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


def problem_of(error: TablesyncError) -> Problem | None:
    """The problem an operator's refusal is answered with; None for an error
    that is not one (it stays a server error)."""
    if isinstance(error, NotFound):
        return Problem(404, str(error))
    if isinstance(error, AlreadyRunning):
        return Problem(409, str(error), run_id=error.run_id)
    if isinstance(error, CommandRefused):
        return Problem(409, str(error))
    if isinstance(error, InvalidRequest | MappingError):
        return Problem(400, str(error))
    if isinstance(error, ApiError):
        log.warning("admin_side_unavailable", side=error.side, status=error.status)
        return Problem(503, f"a side's API cannot be used now: {error}")
    return None


@dataclass
class AdminContext:
    """What the handlers share: the operator's operations, lag, and the state
    database for the dashboard's and the metrics' own reads."""

    pool: Any
    operator: Operator
    lag: LagMonitor
    health: Health | None = None
    queries: AdminQueries = field(init=False)

    def __post_init__(self) -> None:
        self.queries = AdminQueries(self.pool)


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
    # Other statuses answered with ``response`` (not with an error body).
    also: tuple[int, ...] = ()


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


def _ctx(request: Request) -> AdminContext:
    ctx: AdminContext = request.app.state.admin
    return ctx


# Health, documentation, metrics, dashboard


@endpoint(
    "GET",
    "/healthz",
    "Readiness of this process",
    "service",
    response=HealthOut,
    public=True,
    also=(503,),
    description=(
        "200 when Kafka, PostgreSQL and the sides' APIs the process uses answer and "
        "every service loop came round lately; 503 with the reasons when not."
    ),
)
async def healthz(ctx: AdminContext, request: Request) -> Response:
    if ctx.health is None:
        return reply(HealthOut())
    report = ctx.health.ready()
    return reply(HealthOut.model_validate(report.as_dict()), 200 if report.ok else 503)


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
    errors=(409,),
)
async def list_mappings(ctx: AdminContext, request: Request) -> Response:
    mappings = await ctx.operator.mappings()
    last = await ctx.queries.last_jobs()
    return reply([MappingOut.of(m, last.get(m.name)) for m in mappings.mappings])


@endpoint(
    "GET",
    "/api/mappings/{name}",
    "One mapping with its field mappings",
    "mappings",
    response=MappingDetailOut,
    params=MappingPath,
    errors=(404, 409),
)
async def get_mapping(ctx: AdminContext, request: Request) -> Response:
    name = path_of(request, MappingPath).name
    mapping = await ctx.operator.mapping(name)
    last = await ctx.queries.last_jobs()
    return reply(MappingDetailOut.detail(mapping, last.get(name)))


@endpoint(
    "PATCH",
    "/api/mappings/{name}",
    "Change a mapping's direction, filters or sync-only-coupled",
    "mappings",
    response=MappingOut,
    params=MappingPath,
    body=MappingChange,
    errors=(400, 404, 409),
    description="Apply picks the change up from its next batch. "
    "An invalid direction or filter is refused with the reason and nothing is stored.",
)
async def change_mapping(ctx: AdminContext, request: Request) -> Response:
    name = path_of(request, MappingPath).name
    change = await body_of(request, MappingChange)
    changed = await ctx.operator.change_mapping(
        name,
        direction=change.direction,
        sync_only_coupled=change.sync_only_coupled,
        table_filter=change.table_filter,
        integration_table_filter=change.integration_table_filter,
        requested_by="admin",
    )
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
        company=q.company,
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
    return reply(JobOut.of(await ctx.operator.job(job_id)))


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
    errors = await ctx.operator.job_errors(job_id=job_id, limit=q.limit)
    return reply([JobErrorOut.of(e) for e in errors])


# Coupled data synchronization errors and the actions on them


@endpoint(
    "GET",
    "/api/errors",
    "Records that did not sync: pending, failed (retried) or skipped, newest failure first",
    "errors",
    response=ProblemOut,
    many=True,
    query=ProblemsQuery,
    errors=(400,),
    description="What BC's Coupled Data Synchronization Errors page lists and `tablesync "
    "errors` prints: both sides' ids, the last error and how often it happened. A coupling "
    "whose record vanished shows with reason deleted (restore it, delete the surviving "
    "record, or delete the coupling).",
)
async def list_problems(ctx: AdminContext, request: Request) -> Response:
    q = query_of(request, ProblemsQuery)
    rows = await ctx.operator.problems(
        Selection(mapping=q.mapping, skipped_only=q.skipped), limit=q.limit
    )
    return reply([ProblemOut.of(p) for p in rows])


_ACTION_ERRORS = (400, 409, 503)
_SELECTION_TEXT = (
    " The body says which records: ids (on either side), mapping, since, or all: true; "
    "an empty selection is refused with 400, and so is an unknown mapping. Each mapping and "
    "direction acted on writes a job of BC's type with its counts."
)


async def _act(run: Awaitable[ActionResult]) -> Response:
    try:
        return reply(ActionOut.of(await run))
    except UnknownMapping as exc:
        # Named in the body, not the path: a bad request rather than a missing resource.
        raise Problem(400, str(exc)) from None


@endpoint(
    "POST",
    "/api/errors/retry",
    "Retry: clear the skip of the selected records and sync them now",
    "errors",
    response=ActionOut,
    body=RecordSelection,
    errors=_ACTION_ERRORS,
    description="Each record is read again on its side and synced in its direction; "
    '{"mapping": M} retries every listed record of M (BC\'s Retry All).' + _SELECTION_TEXT,
)
async def retry(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, RecordSelection)
    return await _act(ctx.operator.retry(body.selection()))


@endpoint(
    "POST",
    "/api/errors/restore",
    "Restore: re-create the deleted record of each selected coupling from the surviving side",
    "errors",
    response=ActionOut,
    body=RecordSelection,
    errors=_ACTION_ERRORS,
    description="The new record is coupled in place of the deleted one." + _SELECTION_TEXT,
)
async def restore(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, RecordSelection)
    return await _act(ctx.operator.restore(body.selection()))


@endpoint(
    "POST",
    "/api/errors/delete-records",
    "Delete records: delete the surviving record of each selected coupling whose other is gone",
    "errors",
    response=ActionOut,
    body=DeleteRecordsRequest,
    errors=_ACTION_ERRORS,
    description="Records are deleted on a side, so the body must say confirm: true (the "
    "CLI's --yes); without it the request is refused with 400 naming confirm and nothing "
    "is read or written." + _SELECTION_TEXT,
)
async def delete_records(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, DeleteRecordsRequest)
    if not body.confirm:
        raise Problem(
            400,
            "delete-records deletes the surviving record of each selected coupling on its "
            'side: confirm it with "confirm": true',
            fields=[FieldProblem(field="confirm", message="must be true")],
        )
    return await _act(ctx.operator.delete_records(body.selection(), confirmed=True))


@endpoint(
    "POST",
    "/api/errors/delete-couplings",
    "Delete couplings: uncouple the selected records; neither record changes",
    "errors",
    response=ActionOut,
    body=RecordSelection,
    errors=_ACTION_ERRORS,
    description="A later synchronization may create new counterparts of the uncoupled "
    "records. since selects the couplings made since then." + _SELECTION_TEXT,
)
async def delete_couplings(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, RecordSelection)
    return await _act(ctx.operator.delete_couplings(body.selection()))


@endpoint(
    "POST",
    "/api/errors/find-deleted",
    "Find deleted couplings: flag couplings whose record no longer exists on either side",
    "errors",
    response=ActionOut,
    body=FindDeletedRequest,
    errors=_ACTION_ERRORS,
    description="Reads every id of each mapping's tables on both sides (of one mapping when "
    "named); each coupling found with a record gone is listed in the errors with reason "
    "deleted, for restore, delete-records or delete-couplings.",
)
async def find_deleted(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, FindDeletedRequest)
    return await _act(ctx.operator.find_deleted(body.mapping))


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
    rows = await ctx.operator.couplings(mapping=q.mapping, search=q.search, limit=q.limit)
    return reply([CouplingOut.of(r) for r in rows])


@endpoint(
    "POST",
    "/api/couplings",
    "Couple a BC record with a Dataverse row",
    "couplings",
    status=201,
    response=CouplingOut,
    body=CoupleRequest,
    errors=(400, 404, 409, 503),
    description="Both records are read from their sides: a missing one is refused with 404 "
    "naming it, a record already coupled to another one with 409 (uncouple it first). "
    "Neither record is changed; the next change of either one syncs.",
)
async def couple(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, CoupleRequest)
    row = await ctx.operator.couple(
        body.mapping, str(body.bc_id), str(body.dataverse_id), requested_by="admin"
    )
    return reply(CouplingOut.of(row), 201)


@endpoint(
    "DELETE",
    "/api/couplings/{mapping}/{side}/{record_id}",
    "Remove the coupling of a record",
    "couplings",
    response=UncoupledOut,
    params=CouplingPath,
    errors=(400, 404),
    description="side is the side record_id belongs to; neither record is changed. "
    "The removal is logged as an uncoupling job.",
)
async def uncouple(ctx: AdminContext, request: Request) -> Response:
    p = path_of(request, CouplingPath)
    removed = await ctx.operator.uncouple(p.mapping, p.side, str(p.record_id), requested_by="admin")
    return reply(UncoupledOut(mapping=p.mapping, bc_id=removed.bc_id, dataverse_id=removed.dv_id))


@endpoint(
    "POST",
    "/api/records/{mapping}/{side}/{record_id}/sync",
    "Synchronize one record now",
    "couplings",
    response=ActionOut,
    params=CouplingPath,
    errors=(400, 404, 409),
    description="side is the side record_id belongs to. A coupled pair is compared field by "
    "field in each direction the mapping syncs, whatever its versions say; an uncoupled "
    "record is matched, coupled or created. Its jobs count what it did.",
)
async def sync_record(ctx: AdminContext, request: Request) -> Response:
    p = path_of(request, CouplingPath)
    result = await ctx.operator.sync_now(p.mapping, p.side, str(p.record_id), requested_by="admin")
    return reply(ActionOut.of(result))


@endpoint(
    "POST",
    "/api/records/{name}/couple-by-match",
    "Couple selected records by match, now",
    "couplings",
    response=ActionOut,
    params=MappingPath,
    body=CoupleRecordsRequest,
    errors=(400, 404, 409),
    description="BC's match-based coupling of the records named (ids of one side): each "
    "uncoupled one is coupled to the one uncoupled record of the other side the mapping's "
    "match fields find, or created with create_new; ambiguous ones fail and are listed. "
    "Counted in a coupling job of its own. 404 names ids the side does not have.",
)
async def couple_records(ctx: AdminContext, request: Request) -> Response:
    name = path_of(request, MappingPath).name
    body = await body_of(request, CoupleRecordsRequest)
    result = await ctx.operator.couple_records(
        name,
        body.side,
        [str(i) for i in body.ids],
        create_new=body.create_new,
        sync_after=body.sync_after,
        requested_by="admin",
    )
    return reply(ActionOut.of(result))


@endpoint(
    "GET",
    "/api/records/{mapping}/log",
    "What tablesync decided and wrote for one record, newest first",
    "couplings",
    response=RecordLogOut,
    many=True,
    params=RecordPath,
    query=RecordLogQuery,
    errors=(400, 404),
    description="The record log `tablesync record-log` prints: each decision on the record "
    "(side and id) in the job counters' words, with the job it counted in, the direction "
    "written and the names of the fields written (never their values); the decisions on "
    "its counterpart are included. Empty when none is kept (rows go with their jobs).",
)
async def record_log(ctx: AdminContext, request: Request) -> Response:
    mapping = path_of(request, RecordPath).mapping
    q = query_of(request, RecordLogQuery)
    entries = await ctx.operator.record_log(mapping, q.side, str(q.id), limit=q.limit)
    return reply([RecordLogOut.of(e) for e in entries])


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
    return reply([RunOut.of(r) for r in await ctx.operator.runs(limit=q.limit)])


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
    "uncoupled records. With unconditional, coupled records are compared with their "
    "counterparts even when unchanged since the last sync. With ask, it asks at its end "
    "whether to keep sync-only-coupled cleared (see /api/runs/{run_id}/answer). A second "
    "one while one runs is refused with 409 and the running run_id.",
)
async def full_sync(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, FullSyncRequest)
    try:
        run_id = await ctx.operator.full_sync(
            mappings=body.mappings,
            keep_only_coupled_cleared=body.keep_only_coupled_cleared,
            unconditional=body.unconditional,
            ask=body.ask,
            requested_by="admin",
        )
    except UnknownMapping as exc:
        # Named in the body, not the path: a bad request rather than a missing resource.
        raise Problem(400, str(exc)) from None
    return reply(RunAccepted(run_id=run_id, progress=f"/api/runs/{run_id}"), 202)


@endpoint(
    "POST",
    "/api/runs/couple-by-match",
    "Couple uncoupled records to their match (BC's match-based coupling)",
    "runs",
    status=202,
    response=RunAccepted,
    body=CouplingRunRequest,
    errors=(400, 409),
    description="Each uncoupled record is coupled to the one uncoupled record of the other "
    "side its mapping's match fields find; nothing is created or written unless asked. "
    "Counted coupled, unmatched, or failed (listed) when several records match. Refused with "
    "409 while a full synchronization or another coupling run is running.",
)
async def couple_by_match(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, CouplingRunRequest)
    try:
        run_id = await ctx.operator.couple_by_match(
            mappings=body.mappings,
            create_new=body.create_new,
            sync_after=body.sync_after,
            requested_by="admin",
        )
    except UnknownMapping as exc:
        raise Problem(400, str(exc)) from None
    return reply(RunAccepted(run_id=run_id, progress=f"/api/runs/{run_id}"), 202)


@endpoint(
    "POST",
    "/api/runs/sync-modified",
    "Synchronize modified records of every mapping or one",
    "runs",
    status=202,
    response=RunAccepted,
    body=SyncModifiedRequest,
    errors=(400, 409),
)
async def sync_modified(ctx: AdminContext, request: Request) -> Response:
    body = await body_of(request, SyncModifiedRequest)
    try:
        run_id = await ctx.operator.sync_modified(mapping=body.mapping, requested_by="admin")
    except UnknownMapping as exc:
        raise Problem(400, str(exc)) from None
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
    return reply(RunProgressOut.progress(await ctx.operator.progress(run_id)))


@endpoint(
    "POST",
    "/api/runs/{run_id}/cancel",
    "Cancel a run: the mapping being synchronized finishes its step, the rest do not start",
    "runs",
    response=RunOut,
    params=RunPath,
    errors=(400, 404, 409),
    description="Also releases a run whose coordinator is gone, so another full "
    "synchronization can start. A run that ended already is refused with 409.",
)
async def cancel_run(ctx: AdminContext, request: Request) -> Response:
    run_id = str(path_of(request, RunPath).run_id)
    return reply(RunOut.of(await ctx.operator.cancel(run_id, requested_by="admin")))


@endpoint(
    "POST",
    "/api/runs/{run_id}/answer",
    "Answer a full synchronization's question: keep sync-only-coupled cleared or restore it",
    "runs",
    response=RunOut,
    params=RunPath,
    body=AnswerRequest,
    errors=(400, 404, 409),
    description="A full synchronization requested with ask waits at its end for this "
    "answer (its question shows on the run) up to sync.keep_question_wait_s, then restores "
    "the setting. A run that asks nothing, was answered or ended is refused with 409.",
)
async def answer_run(ctx: AdminContext, request: Request) -> Response:
    run_id = str(path_of(request, RunPath).run_id)
    body = await body_of(request, AnswerRequest)
    return reply(RunOut.of(await ctx.operator.answer(run_id, body.keep, requested_by="admin")))
