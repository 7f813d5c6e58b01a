"""OData system query options (``$filter $select $orderby $top $skip $count $skiptoken``)
parsed against the catalog and run as one SELECT.

``$skip`` is BC's only ("Using filters with API calls" lists ``$skip``; Dataverse's
"Query data using the Web API" does not, and Dataverse refuses it). It skips rows of the
first page in the query's order; the ``$skiptoken`` of the pages after it carries the
keyset position, so a skip is applied once however the client pages on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tablesync.core.catalog import FieldDef
from tablesync.core.filters import Expr, parse
from tablesync.emulators.common.filtersql import compile_filter
from tablesync.emulators.common.paging import (
    Cursor,
    OrderKey,
    after_predicate,
    order_by,
)
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident, output_expr
from tablesync.errors import FilterSyntaxError

__all__ = [
    "VERSION_ALIAS",
    "Page",
    "QueryOptions",
    "count_rows",
    "parse_options",
    "read_page",
    "select_list",
]

_SUPPORTED = frozenset({"$filter", "$select", "$orderby", "$top", "$count", "$skiptoken"})
_SKIP = "$skip"
_KNOWN_UNSUPPORTED = frozenset(
    {"$expand", "$skip", "$search", "$apply", "$compute", "$levels", "$format", "$index"}
)
VERSION_ALIAS = "@version"
_KEY_PREFIX = "@k"


@dataclass(frozen=True, slots=True)
class QueryOptions:
    filter: Expr | None = None
    select: tuple[FieldDef, ...] | None = None
    orderby: tuple[OrderKey, ...] = ()
    top: int | None = None
    count: bool = False
    skiptoken: str | None = None
    skip: int = 0

    def sort_keys(self, spec: TableSpec) -> tuple[OrderKey, ...]:
        key = spec.entity.fields[spec.entity.key]
        keys = tuple(k for k in self.orderby if k.field.name != key.name)
        return (*keys, OrderKey(key))


def _unknown(spec: TableSpec, name: str) -> ApiProblem:
    return ApiProblem(
        Kind.UNKNOWN_PROPERTY,
        f"Could not find a property named '{name}' on type '{spec.type_name}'.",
    )


def _field(spec: TableSpec, name: str) -> FieldDef:
    field = spec.entity.fields.get(name)
    if field is None:
        raise _unknown(spec, name)
    return field


def _parse_filter(spec: TableSpec, text: str) -> Expr:
    try:
        expr = parse(text)
    except FilterSyntaxError as exc:
        raise ApiProblem(
            Kind.BAD_QUERY,
            f"Syntax error in $filter at position {exc.position} in '{text}': {exc.reason}.",
        ) from None
    return expr


def _parse_select(spec: TableSpec, text: str) -> tuple[FieldDef, ...]:
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ApiProblem(Kind.BAD_QUERY, f"Syntax error in $select '{text}': empty item.")
    fields = [_field(spec, n) for n in names]
    key = spec.entity.fields[spec.entity.key]
    if key not in fields:
        fields.append(key)
    return tuple(dict.fromkeys(fields))


def _parse_orderby(spec: TableSpec, text: str) -> tuple[OrderKey, ...]:
    keys = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2:
            raise ApiProblem(Kind.BAD_QUERY, f"Syntax error in $orderby '{text}' near '{item}'.")
        descending = False
        if len(words) == 2:
            if words[1] not in ("asc", "desc"):
                raise ApiProblem(
                    Kind.BAD_QUERY,
                    f"Syntax error in $orderby '{text}': expected 'asc' or 'desc' after "
                    f"'{words[0]}', found '{words[1]}'.",
                )
            descending = words[1] == "desc"
        keys.append(OrderKey(_field(spec, words[0]), descending))
    return tuple(keys)


def _parse_count_option(name: str, text: str) -> int:
    if not text.isdigit():
        raise ApiProblem(
            Kind.BAD_QUERY,
            f"Invalid value '{text}' for {name} query option: expected an integer >= 0.",
        )
    return int(text)


def _parse_top(text: str) -> int:
    return _parse_count_option("$top", text)


def parse_options(
    spec: TableSpec, query: Mapping[str, str], *, allow_skip: bool = False
) -> QueryOptions:
    """The system query options in ``query``; ApiProblem naming any that is not valid.

    ``allow_skip``: the API serves ``$skip`` (BC's collections)."""
    for name in query:
        if not name.startswith("$") or name in _SUPPORTED or (allow_skip and name == _SKIP):
            continue
        if name in _KNOWN_UNSUPPORTED:
            raise ApiProblem(
                Kind.NOT_SUPPORTED, f"The query option '{name}' is not supported by this emulator."
            )
        raise ApiProblem(Kind.BAD_QUERY, f"The query parameter '{name}' is not supported.")
    filter_text = query.get("$filter")
    expr = _parse_filter(spec, filter_text) if filter_text is not None else None
    select_text = query.get("$select")
    count = query.get("$count", "false")
    if count not in ("true", "false"):
        raise ApiProblem(Kind.BAD_QUERY, f"Invalid value '{count}' for $count: true or false.")
    top_text = query.get("$top")
    orderby_text = query.get("$orderby")
    return QueryOptions(
        filter=expr,
        select=_parse_select(spec, select_text) if select_text else None,
        orderby=_parse_orderby(spec, orderby_text) if orderby_text else (),
        top=_parse_top(top_text) if top_text is not None else None,
        count=count == "true",
        skiptoken=query.get("$skiptoken"),
        skip=_parse_count_option(_SKIP, query[_SKIP]) if allow_skip and _SKIP in query else 0,
    )


def select_list(
    spec: TableSpec, fields: Sequence[FieldDef], extra: Sequence[str] = (), qualifier: str = ""
) -> str:
    """The columns a response needs: ``fields`` formatted, the row version, ``extra``."""
    # Every write answers with the same columns: the text is made once per shape.
    key = (spec.table, tuple(f.name for f in fields), tuple(extra), qualifier)
    text = _SELECT_LISTS.get(key)
    if text is None:
        parts = [output_expr(spec, f, qualifier) for f in fields]
        parts.append(f"{qualifier}{ident(spec.version_column)} AS {ident(VERSION_ALIAS)}")
        parts.extend(extra)
        text = _SELECT_LISTS[key] = ", ".join(parts)
    return text


_SELECT_LISTS: dict[tuple[str, tuple[str, ...], tuple[str, ...], str], str] = {}


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Any]
    """asyncpg records: the selected properties, ``@version`` and the cursor columns."""
    next_token: str | None


def _where(spec: TableSpec, options: QueryOptions, params: Params) -> list[str]:
    return [compile_filter(options.filter, spec, params)] if options.filter is not None else []


async def read_page(
    db: Executor,
    spec: TableSpec,
    options: QueryOptions,
    fields: Sequence[FieldDef],
    page_size: int,
    extra: Sequence[str] = (),
) -> Page:
    """One page of rows matching ``options``, and the token of the next page if any."""
    keys = options.sort_keys(spec)
    params = Params()
    where = _where(spec, options, params)
    remaining = options.top
    if options.skiptoken is not None:
        cursor = Cursor.decode(options.skiptoken, keys)
        where.append(after_predicate(spec, keys, cursor.values, params))
        remaining = cursor.remaining
    limit = page_size if remaining is None else min(page_size, remaining)
    # A $skiptoken already stands after the skipped rows.
    offset = options.skip if options.skiptoken is None else 0
    cursor_columns = [
        f"{ident(k.field.name)} AS {ident(_KEY_PREFIX + str(i))}" for i, k in enumerate(keys)
    ]
    sql = (
        f"SELECT {select_list(spec, fields, [*extra, *cursor_columns])} FROM {spec.table}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {order_by(spec, keys)} LIMIT {params.add(limit + 1, 'bigint')}"
        + (f" OFFSET {params.add(offset, 'bigint')}" if offset else "")
    )
    rows = await db.fetch(sql, *params.values)
    more = len(rows) > limit
    rows = rows[:limit]
    left = None if remaining is None else remaining - len(rows)
    next_token = None
    if rows and (more and (left is None or left > 0)):
        last = rows[-1]
        values = tuple(last[_KEY_PREFIX + str(i)] for i in range(len(keys)))
        next_token = Cursor(values, left).encode(keys)
    return Page(rows, next_token)


async def count_rows(
    db: Executor, spec: TableSpec, options: QueryOptions, cap: int | None = None
) -> int:
    """How many rows match ``options.filter`` (at most ``cap``, as Dataverse counts)."""
    params = Params()
    where = _where(spec, options, params)
    inner = f"SELECT 1 FROM {spec.table}" + (f" WHERE {' AND '.join(where)}" if where else "")
    if cap is not None:
        inner += f" LIMIT {params.add(cap, 'bigint')}"
    count: int = await db.fetchval(f"SELECT count(*) FROM ({inner}) AS matched", *params.values)
    return count
