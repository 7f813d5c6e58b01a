"""The BC API: ``companies`` and the entity sets under ``companies({id})/``.

Follows the v2.0 reference (``dev-itpro/api-reference/v2.0/api/dynamics_<entity>_*.md``):
POST answers ``201`` with the record, PATCH ``200`` with the record, DELETE ``204``;
PATCH and DELETE require ``If-Match`` (``*`` allowed). ``Prefer: return=minimal`` turns
the record answers into ``204``. ``id`` and the other non-editable fields are refused on
write. Server-driven paging uses the configured max page size, lowered by
``Prefer: odata.maxpagesize``; ``$top`` and ``$skip`` page on the client's side ("Using
filters with API calls"). ``$metadata`` is the CSDL of the route's entity sets
(``metadata``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg

from tablesync.core.catalog import FieldDef
from tablesync.core.events import Side
from tablesync.emulators.bc import batch
from tablesync.emulators.bc.metadata import metadata_document
from tablesync.emulators.bc.rules import write_assigns
from tablesync.emulators.bc.specs import BC_SPECS, NUMBER_SERIES, root_of
from tablesync.emulators.bc.style import BC_STYLE, caption_of
from tablesync.emulators.common.etags import bc_etag, parse_precondition
from tablesync.emulators.common.listing import shown
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.payload import convert_properties, json_object
from tablesync.emulators.common.prefer import max_page_size, parse_prefer
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.query import (
    count_rows,
    parse_options,
    read_page,
    select_list,
)
from tablesync.emulators.common.reading import next_link, shape_row
from tablesync.emulators.common.runtime import Tuning
from tablesync.emulators.common.schema import (
    SERIES_TABLE,
    ensure_schema,
    meta_get,
    meta_set,
    truncate_all,
)
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident
from tablesync.emulators.common.values import parse_guid
from tablesync.emulators.common.writes import delete_sql, insert_sql, update_sql

__all__ = [
    "COMPANY_NAME",
    "ETAG_REQUIRED_MESSAGE",
    "STALE_MESSAGE",
    "BcService",
    "duplicate",
    "not_found",
    "required",
    "version_of",
]

COMPANY_NAME = "CRONUS USA, Inc."
_SYSTEM_VERSION = "24.0.16410.18056"
_PATH_RE = re.compile(
    r"companies(?:\((?P<company>[^)]*)\))?"
    r"(?:/(?P<set>[A-Za-z]+)(?:\((?P<key>[^)]*)\))?(?P<count>/\$count)?)?"
)
_MIN_ETAG = re.compile(r"'(\d+);(\d+);00;'")
STALE_MESSAGE = "Another user has already changed the record."
ETAG_REQUIRED_MESSAGE = (
    "Could not validate the client concurrency token required by the service. "
    "Please provide a valid token in the client request."
)


def version_of(tag: str) -> int | None:
    """The row version inside a BC ETag; None when the tag is not one of ours."""
    try:
        text = base64.b64decode(tag, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    match = _MIN_ETAG.fullmatch(text)
    return int(match[2]) if match else None


def not_found(spec: TableSpec, key: UUID) -> ApiProblem:
    caption = caption_of(spec.entity)[0]
    return ApiProblem(
        Kind.NOT_FOUND,
        f"The {caption} does not exist. Identification fields and values: Id='{key}'",
    )


def duplicate(spec: TableSpec, values: dict[str, object]) -> ApiProblem:
    """A create or update that would give a second record the same number (code)."""
    caption, key_caption = caption_of(spec.entity)
    key_field = spec.entity.number_field or "code"
    return ApiProblem(
        Kind.DUPLICATE,
        f"The record in table {caption} already exists. Identification fields and values: "
        f"{key_caption}='{values.get(key_field, '')}'",
    )


def required(spec: TableSpec, values: dict[str, object]) -> ApiProblem | None:
    """The refusal of a create that leaves a required field blank, if it does."""
    missing = [f.name for f in spec.entity.fields.values() if f.required and not values.get(f.name)]
    if not missing:
        return None
    return ApiProblem(Kind.REQUIRED, f"Field '{missing[0]}' must not be blank or empty.")


@dataclass(frozen=True, slots=True)
class _Target:
    spec: TableSpec
    company: UUID
    key: UUID | None
    count: bool
    schema: str | None
    """The database schema of the company's tables; None for the first company's."""


@dataclass(frozen=True, slots=True)
class Company:
    """One company of the environment: its rows live in ``schema`` (the first
    company's in the database's default schema, ``None``)."""

    id: UUID
    name: str
    created: str
    schema: str | None


class BcService:
    side: Side = "bc"
    style = BC_STYLE

    def __init__(
        self,
        tuning: Tuning,
        specs: tuple[TableSpec, ...] = BC_SPECS,
        companies: Sequence[str] = (COMPANY_NAME,),
    ) -> None:
        if not companies or len(set(companies)) != len(companies):
            raise ValueError(f"the BC emulator needs distinct company names, got {companies!r}")
        self.tuning = tuning
        self.specs = specs
        self.roots = tuple(dict.fromkeys(root_of(s.entity.api_route) for s in specs))
        self._sets = {(root_of(s.entity.api_route), s.entity.entity_set): s for s in specs}
        self.company_names = tuple(companies)
        self.companies: tuple[Company, ...] = ()
        self.company_id = UUID(int=0)

    @property
    def extra_schemas(self) -> tuple[str, ...]:
        """The schemas of the companies after the first: what a reset empties too."""
        return tuple(c.schema for c in self.companies if c.schema is not None)

    # ------------------------------------------------------------ lifecycle

    async def prepare(self, db: Executor) -> None:
        companies = []
        for index, name in enumerate(self.company_names):
            # The first company keeps the keys it always had, so a database made
            # before there were several companies keeps its company id.
            suffix = "" if index == 0 else f":{index}"
            company = await meta_get(db, "company_id" + suffix)
            created = await meta_get(db, "company_created" + suffix)
            if company is None or created is None:
                company = str(uuid4())
                created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                await meta_set(db, "company_id" + suffix, company)
                await meta_set(db, "company_created" + suffix, created)
            schema = None if index == 0 else f"company_{index}"
            companies.append(Company(UUID(company), name, created, schema))
        self.companies = tuple(companies)
        self.company_id = companies[0].id
        await self._prepare_rows(db)
        for further in self.companies[1:]:
            async with _in_schema(db, further.schema, create=True) as conn:
                await ensure_schema(conn, self.specs)
                await self._prepare_rows(conn)

    async def _prepare_rows(self, db: Executor) -> None:
        for entity_set, (prefix, width) in NUMBER_SERIES.items():
            await db.execute(
                f"INSERT INTO {SERIES_TABLE} (entity_set, prefix, width) VALUES ($1, $2, $3) "
                "ON CONFLICT (entity_set) DO NOTHING",
                entity_set,
                prefix,
                width,
            )

    async def reset(self, db: Executor) -> None:
        """Empty the tables of every company; the companies themselves stay."""
        for schema in self.extra_schemas:
            async with _in_schema(db, schema) as conn:
                await truncate_all(conn, self.specs)

    # ------------------------------------------------------------ routing

    async def handle(self, request: ApiRequest, db: Executor) -> ApiResponse:
        path = request.path.rstrip("/")
        if path == "$batch":
            if request.method != "POST":
                raise ApiProblem(Kind.METHOD_NOT_ALLOWED, "$batch accepts POST only.")
            return await batch.run(self, request, db)
        if path == "$metadata":
            return self._metadata(request)
        if path == "":
            return self._service_document(request)
        match = _PATH_RE.fullmatch(path)
        if match is None:
            segment = path.split("/")[0].split("(")[0]
            raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{segment}'.")
        company_text = match["company"]
        if match["set"] is None:
            if request.method != "GET":
                raise ApiProblem(
                    Kind.METHOD_NOT_ALLOWED,
                    f"'{request.method}' requests for 'companies' are not allowed.",
                )
            return self._companies(request, company_text)
        if company_text is None:
            raise ApiProblem(Kind.NO_RESOURCE, "A company must be given: companies({id})/...")
        target = self._target(request, match, company_text)
        if target.schema is None:
            return await self._entity_request(request, db, target)
        async with _in_schema(db, target.schema) as conn:
            return await self._entity_request(request, conn, target)

    def _company(self, company_text: str) -> Company:
        company = parse_guid(company_text, "the company id")
        for known in self.companies:
            if known.id == company:
                return known
        raise ApiProblem(Kind.NO_RESOURCE, f"The company with id {company} does not exist.")

    def _target(self, request: ApiRequest, match: re.Match[str], company_text: str) -> _Target:
        company = self._company(company_text)
        spec = self._sets.get((request.root, match["set"]))
        if spec is None:
            raise ApiProblem(
                Kind.NO_RESOURCE, f"Resource not found for the segment '{match['set']}'."
            )
        key_text = match["key"]
        key = None
        if key_text is not None:
            key = parse_guid(key_text.removeprefix("id="), f"the key of {match['set']}")
        return _Target(spec, company.id, key, match["count"] is not None, company.schema)

    async def _entity_request(
        self, request: ApiRequest, db: Executor, target: _Target
    ) -> ApiResponse:
        method = request.method
        if target.count:
            if method != "GET" or target.key is not None:
                raise ApiProblem(Kind.METHOD_NOT_ALLOWED, "$count accepts GET on a collection.")
            return await self._count(request, db, target)
        if target.key is None:
            if method == "GET":
                return await self._list(request, db, target)
            if method == "POST":
                return await self._create(request, db, target)
        else:
            if method == "GET":
                return await self._get(request, db, target, target.key)
            if method == "PATCH":
                return await self._update(request, db, target, target.key)
            if method == "DELETE":
                return await self._delete(request, db, target, target.key)
        raise ApiProblem(
            Kind.METHOD_NOT_ALLOWED,
            f"'{method}' requests for '{target.spec.entity.entity_set}' are not allowed here.",
        )

    # ------------------------------------------------------------ companies

    @staticmethod
    def _company_json(company: Company) -> dict[str, object]:
        return {
            "id": str(company.id),
            "systemVersion": _SYSTEM_VERSION,
            "timestamp": 0,
            "name": company.name,
            "displayName": company.name,
            "businessProfileId": "",
            "systemCreatedAt": company.created,
            "systemCreatedBy": str(UUID(int=0)),
            "systemModifiedAt": company.created,
            "systemModifiedBy": str(UUID(int=0)),
        }

    def _companies(self, request: ApiRequest, company_text: str | None) -> ApiResponse:
        context = f"{request.service_root}/$metadata#companies"
        if company_text is None:
            listed = [self._company_json(c) for c in self.companies]
            return ApiResponse.json(200, {"@odata.context": context, "value": listed})
        company = self._company(company_text)
        return ApiResponse.json(
            200, {"@odata.context": f"{context}/$entity", **self._company_json(company)}
        )

    def _metadata(self, request: ApiRequest) -> ApiResponse:
        if request.method != "GET":
            raise ApiProblem(Kind.METHOD_NOT_ALLOWED, "$metadata accepts GET only.")
        for name in request.query:
            # BC documents no query option of $metadata but the schema version of its
            # enum names; the emulator has only the one schema and leaves $format out.
            if name.startswith("$") and name != "$schemaversion":
                raise ApiProblem(Kind.BAD_QUERY, f"The query parameter '{name}' is not supported.")
        specs = [s for (root, _), s in self._sets.items() if root == request.root]
        return metadata_document(specs)

    def _service_document(self, request: ApiRequest) -> ApiResponse:
        names = [
            "companies",
            *(s.entity.entity_set for (root, _), s in self._sets.items() if root == request.root),
        ]
        return ApiResponse.json(
            200,
            {
                "@odata.context": f"{request.service_root}/$metadata",
                "value": [{"name": n, "kind": "EntitySet", "url": n} for n in names],
            },
        )

    # ------------------------------------------------------------ reads

    def _context(self, request: ApiRequest, target: _Target, suffix: str = "") -> str:
        return (
            f"{request.service_root}/$metadata#companies({target.company})/"
            f"{target.spec.entity.entity_set}{suffix}"
        )

    def _url(self, request: ApiRequest, target: _Target, key: object) -> str:
        return (
            f"{request.service_root}/companies({target.company})/"
            f"{target.spec.entity.entity_set}({key})"
        )

    async def _list(self, request: ApiRequest, db: Executor, target: _Target) -> ApiResponse:
        spec = target.spec
        options = parse_options(spec, request.query, allow_skip=True)
        fields = options.select or tuple(spec.entity.fields.values())
        preferences = parse_prefer(request.header("prefer"))
        requested = max_page_size(preferences)
        page_size = min(requested or self.tuning.max_page_size, self.tuning.max_page_size)
        page = await read_page(db, spec, options, fields, page_size)
        body: dict[str, object] = {"@odata.context": self._context(request, target)}
        if options.count:
            body["@odata.count"] = await count_rows(db, spec, options)
        rows = shown(self.tuning.short_listing, spec, options, page.rows)
        body["value"] = [shape_row(r, fields, bc_etag) for r in rows]
        if page.next_token is not None:
            body["@odata.nextLink"] = next_link(request, page.next_token)
        headers = {"Preference-Applied": f"odata.maxpagesize={requested}"} if requested else None
        return ApiResponse.json(200, body, headers)

    async def _count(self, request: ApiRequest, db: Executor, target: _Target) -> ApiResponse:
        # $count counts the filtered collection, whatever $top and $skip say.
        options = parse_options(target.spec, request.query, allow_skip=True)
        count = await count_rows(db, target.spec, options)
        return ApiResponse(200, str(count).encode(), [("content-type", "text/plain")])

    def _record_response(
        self,
        request: ApiRequest,
        target: _Target,
        record: Any,
        fields: Sequence[FieldDef],
        status: int,
        extra_headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        row = shape_row(record, fields, bc_etag)
        headers = {"ETag": str(row["@odata.etag"]), **(extra_headers or {})}
        preferences = parse_prefer(request.header("prefer"))
        if request.method != "GET" and preferences.get("return") == "minimal":
            headers["Preference-Applied"] = "return=minimal"
            return ApiResponse.empty(204, headers)
        body = {"@odata.context": self._context(request, target, "/$entity"), **row}
        return ApiResponse.json(status, body, headers)

    async def _get(
        self, request: ApiRequest, db: Executor, target: _Target, key: UUID
    ) -> ApiResponse:
        spec = target.spec
        options = parse_options(spec, request.query)
        fields = options.select or tuple(spec.entity.fields.values())
        record = await db.fetchrow(
            f"SELECT {select_list(spec, fields)} FROM {spec.table} WHERE id = $1", key
        )
        if record is None:
            raise not_found(spec, key)
        condition = parse_precondition(request.header("if-none-match"))
        if condition is not None and condition.matches(bc_etag(record["@version"])):
            return ApiResponse.empty(304, {"ETag": bc_etag(record["@version"])})
        return self._record_response(request, target, record, fields, 200)

    # ------------------------------------------------------------ writes

    async def _create(self, request: ApiRequest, db: Executor, target: _Target) -> ApiResponse:
        spec = target.spec
        values = convert_properties(spec, json_object(request))
        blank = required(spec, values)
        if blank is not None:
            raise blank
        params = Params()
        assigns = write_assigns(spec, values, params, creating=True)
        fields = tuple(spec.entity.fields.values())
        sql = insert_sql(spec, assigns, select_list(spec, fields))
        try:
            record = await db.fetchrow(sql, *params.values)
        except asyncpg.UniqueViolationError:
            raise duplicate(spec, values) from None
        location = self._url(request, target, record["id"])
        return self._record_response(request, target, record, fields, 201, {"Location": location})

    def _precondition(self, request: ApiRequest) -> list[int] | None:
        """The versions If-Match allows; None for ``*``. BC requires the header."""
        condition = parse_precondition(request.header("if-match"))
        if condition is None:
            raise ApiProblem(Kind.ETAG_REQUIRED, ETAG_REQUIRED_MESSAGE)
        if condition.any:
            return None
        versions = [v for v in (version_of(t) for t in condition.tags) if v is not None]
        if not versions:
            raise ApiProblem(Kind.ETAG_REQUIRED, ETAG_REQUIRED_MESSAGE)
        return versions

    async def _missing_or_stale(self, db: Executor, spec: TableSpec, key: UUID) -> ApiProblem:
        exists = await db.fetchval(f"SELECT 1 FROM {spec.table} WHERE id = $1", key)
        if not exists:
            return not_found(spec, key)
        return ApiProblem(Kind.STALE, STALE_MESSAGE)

    def _where(self, params: Params, key: UUID, versions: list[int] | None) -> str:
        where = f"id = {params.add(key, 'uuid')}"
        if versions is not None:
            where += f" AND {ident('_version')} = ANY({params.add(versions, 'bigint[]')})"
        return where

    async def _update(
        self, request: ApiRequest, db: Executor, target: _Target, key: UUID
    ) -> ApiResponse:
        spec = target.spec
        versions = self._precondition(request)
        values = convert_properties(spec, json_object(request))
        params = Params()
        assigns = write_assigns(spec, values, params, creating=False)
        fields = tuple(spec.entity.fields.values())
        sql = update_sql(
            spec, assigns, self._where(params, key, versions), select_list(spec, fields)
        )
        try:
            record = await db.fetchrow(sql, *params.values)
        except asyncpg.UniqueViolationError:
            raise duplicate(spec, values) from None
        if record is None:
            raise await self._missing_or_stale(db, spec, key)
        return self._record_response(request, target, record, fields, 200)

    async def _delete(
        self, request: ApiRequest, db: Executor, target: _Target, key: UUID
    ) -> ApiResponse:
        spec = target.spec
        versions = self._precondition(request)
        params = Params()
        deleted = await db.fetchval(
            delete_sql(spec, self._where(params, key, versions)), *params.values
        )
        if deleted is None:
            raise await self._missing_or_stale(db, spec, key)
        return ApiResponse.empty(204)


@contextlib.asynccontextmanager
async def _in_schema(
    db: Executor, schema: str | None, *, create: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """``db`` (a connection of it, for a pool) with only ``schema`` on its search
    path: every table, sequence and function the statements name is that company's,
    and none of the first company's can be reached by a name missing there."""
    if schema is None:
        raise ValueError("the first company's tables need no schema of their own")
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as acquired, _in_schema(acquired, schema, create=create) as inner:
            yield inner
        return
    conn = cast(asyncpg.Connection, db)
    previous = await conn.fetchval("SELECT current_setting('search_path')")
    if create:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    await conn.execute("SELECT set_config('search_path', $1, false)", ident(schema))
    try:
        yield conn
    finally:
        # In a transaction a failed statement aborted, the rollback to its savepoint
        # puts the search path back; there is nothing to run then.
        with contextlib.suppress(asyncpg.InFailedSQLTransactionError):
            await conn.execute("SELECT set_config('search_path', $1, false)", previous)
