"""Dataverse reads: queries, single rows and properties shaped as the Web API returns them.

Paging follows "Page results using OData" (``Prefer: odata.maxpagesize``, at most 5,000,
``$top`` ignored when both are given); counting follows "Count rows using OData"
(``@odata.count`` up to 5,000); lookup annotations follow "Select columns using OData"
(``_x_value@Microsoft.Dynamics.CRM.lookuplogicalname`` and
``…associatednavigationproperty`` when ``odata.include-annotations`` asks for them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.etags import dataverse_etag, parse_precondition
from tablesync.emulators.common.listing import ShortListing, shown
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.prefer import max_page_size, parse_prefer
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.query import (
    VERSION_ALIAS,
    count_rows,
    parse_options,
    read_page,
    select_list,
)
from tablesync.emulators.common.reading import next_link
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident
from tablesync.emulators.dataverse.keys import KeyRef

__all__ = [
    "MAX_PAGE_SIZE",
    "context_url",
    "count",
    "fetch",
    "get_row",
    "list_rows",
    "selected_fields",
    "shape",
]

MAX_PAGE_SIZE = 5000
"""Dataverse never returns more rows per page, nor counts beyond this."""
_LOOKUP_ANNOTATIONS = (
    "Microsoft.Dynamics.CRM.lookuplogicalname",
    "Microsoft.Dynamics.CRM.associatednavigationproperty",
)


def _wants(preferences: Mapping[str, str], annotation: str) -> bool:
    wanted = [a.strip() for a in preferences.get("odata.include-annotations", "").split(",")]
    return any(
        w in ("*", annotation) or (w.endswith("*") and annotation.startswith(w[:-1]))
        for w in wanted
        if w
    )


def _wants_lookups(preferences: Mapping[str, str]) -> bool:
    return any(_wants(preferences, a) for a in _LOOKUP_ANNOTATIONS)


def selected_fields(spec: TableSpec, request: ApiRequest) -> tuple[FieldDef, ...]:
    options = parse_options(spec, request.query)
    return options.select or tuple(spec.entity.fields.values())


def _annotation_columns(spec: TableSpec, fields: Sequence[FieldDef]) -> list[str]:
    """The stored table names of polymorphic lookups among ``fields``."""
    columns = []
    for field in fields:
        lookup = spec.entity.lookups.get(field.lookup or "")
        if lookup is not None and lookup.polymorphic:
            column = ident(lookup.value_field + "@logical")
            columns.append(f"{column} AS {column}")
    return columns


def shape(
    spec: TableSpec, record: Any, fields: Sequence[FieldDef], annotate: bool
) -> dict[str, object]:
    row: dict[str, object] = {"@odata.etag": dataverse_etag(record[VERSION_ALIAS])}
    lookups = spec.entity.lookups
    for field in fields:
        value = record[field.name]
        if annotate and field.lookup is not None and value is not None:
            lookup = lookups[field.lookup]
            if lookup.polymorphic:
                logical = record[lookup.value_field + "@logical"]
                target = next(t for t in lookup.targets if t.logical_name == logical)
            else:
                target = lookup.targets[0]
            row[f"{field.name}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = (
                target.navigation
            )
            row[f"{field.name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target.logical_name
        row[field.name] = value
    return row


def context_url(request: ApiRequest, spec: TableSpec, entity: bool) -> str:
    name = spec.entity.entity_set
    if "$select" in request.query:
        name += f"({request.query['$select']})"
    return f"{request.service_root}/$metadata#{name}" + ("/$entity" if entity else "")


async def list_rows(
    request: ApiRequest,
    db: Executor,
    spec: TableSpec,
    page_limit: int,
    short: ShortListing | None = None,
) -> ApiResponse:
    options = parse_options(spec, request.query)
    fields = options.select or tuple(spec.entity.fields.values())
    preferences = parse_prefer(request.header("prefer"))
    requested = max_page_size(preferences)
    limit = min(MAX_PAGE_SIZE, page_limit)
    page_size = min(requested or limit, limit)
    if requested is not None and options.top is not None and options.skiptoken is None:
        # "If you include both, $top is ignored" (Page results using OData).
        options = replace(options, top=None)
    annotate = _wants_lookups(preferences)
    extra = _annotation_columns(spec, fields) if annotate else []
    page = await read_page(db, spec, options, fields, page_size, extra)
    body: dict[str, object] = {"@odata.context": context_url(request, spec, False)}
    if options.count:
        matched = await count_rows(db, spec, options, cap=MAX_PAGE_SIZE + 1)
        body["@odata.count"] = min(matched, MAX_PAGE_SIZE)
        if _wants(preferences, "Microsoft.Dynamics.CRM.totalrecordcount"):
            body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(matched, MAX_PAGE_SIZE)
            body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = matched > MAX_PAGE_SIZE
    body["value"] = [
        shape(spec, r, fields, annotate) for r in shown(short, spec, options, page.rows)
    ]
    if page.next_token is not None:
        body["@odata.nextLink"] = next_link(request, page.next_token)
    applied = []
    if requested is not None:
        applied.append(f"odata.maxpagesize={requested}")
    if "odata.include-annotations" in preferences:
        applied.append(f'odata.include-annotations="{preferences["odata.include-annotations"]}"')
    headers = {"Preference-Applied": ", ".join(applied)} if applied else None
    return ApiResponse.json(200, body, headers)


async def count(request: ApiRequest, db: Executor, spec: TableSpec) -> ApiResponse:
    options = parse_options(spec, request.query)
    matched = await count_rows(db, spec, options, cap=MAX_PAGE_SIZE)
    return ApiResponse(200, str(matched).encode(), [("content-type", "text/plain")])


async def fetch(
    db: Executor, key: KeyRef, fields: Sequence[FieldDef], extra: Sequence[str] = ()
) -> Any:
    params = Params()
    spec = key.spec
    sql = (
        f"SELECT {select_list(spec, fields, extra)} FROM {spec.table} WHERE {key.predicate(params)}"
    )
    return await db.fetchrow(sql, *params.values)


async def get_row(request: ApiRequest, db: Executor, key: KeyRef) -> ApiResponse:
    spec = key.spec
    fields = selected_fields(spec, request)
    annotate = _wants_lookups(parse_prefer(request.header("prefer")))
    extra = _annotation_columns(spec, fields) if annotate else []
    record = await fetch(db, key, fields, extra)
    if record is None:
        raise ApiProblem(Kind.NOT_FOUND, key.describe())
    etag = dataverse_etag(record[VERSION_ALIAS])
    condition = parse_precondition(request.header("if-none-match"))
    # Annotations can reflect other rows, so a request for them is never 304.
    if condition is not None and condition.matches(etag) and not annotate:
        return ApiResponse.empty(304, {"ETag": etag})
    body = {
        "@odata.context": context_url(request, spec, True),
        **shape(spec, record, fields, annotate),
    }
    return ApiResponse.json(200, body, {"ETag": etag})
