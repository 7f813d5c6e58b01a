"""What both connectors share: reading pages, chunked id look-ups, write results.

Reads follow the server's ``@odata.nextLink`` until there is none, asking for
``page_size`` rows a page with ``Prefer: odata.maxpagesize`` (sent again on every
next-link request, as Dataverse's query documentation asks; ``$top`` and the
preference are never combined). Filters are ASTs rendered with ``to_odata``, so no
value is ever spliced into a URL as raw text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote
from uuid import UUID

import structlog

from tablesync.adapters.odata.entities import EntitySpec, SpecSource, described_specs
from tablesync.adapters.odata.http import ODataHttp, Reply, error_message
from tablesync.adapters.odata.rows import to_row
from tablesync.adapters.odata.stats import ApiStats, UserStats
from tablesync.core.events import Side
from tablesync.core.filters import (
    Compare,
    Expr,
    Op,
    Or,
    conjoin,
    disjoined_within,
    to_odata,
)
from tablesync.core.metadata import TableInfo
from tablesync.core.records import (
    Changes,
    Delete,
    Missing,
    Rejected,
    Row,
    Stale,
    Update,
    WriteOp,
    WriteResult,
    Written,
)
from tablesync.errors import (
    ApiAuthError,
    ApiError,
    ChangeTrackingUnavailable,
    ReadRefused,
    ReadUnauthorized,
    TokenRefused,
)
from tablesync.settings import ApiSettings

__all__ = ["ID_CHUNK", "ODataSide", "classify", "entity_id_from", "query"]

T = TypeVar("T")

ID_CHUNK = 100
"""Most ids per ``key eq a or key eq b …`` filter, and so per request: a few KB of URL,
well inside the limits of both services and their proxies (BC's own integration
chunks at 400). Fewer when the filter text would outgrow ``filters.MAX_LENGTH``, the
longest filter the shared grammar (and so the emulators) accepts."""


def id_chunks(key: str, ids: Sequence[str]) -> list[list[str]]:
    """``ids`` (GUIDs) in chunks of one ``id_filter`` each, within the filter limits."""
    return disjoined_within(ids, lambda i: Compare(key, Op.EQ, UUID(i)), most=ID_CHUNK)


# Characters left as they are in query option values: OData punctuation that servers
# read literally. Space, '+', '&', '#' and '%' are always escaped.
_QUERY_SAFE = "',():*"


def query(route: str, options: Iterable[tuple[str, str]]) -> str:
    text = "&".join(f"{name}={quote(value, safe=_QUERY_SAFE)}" for name, value in options)
    return f"{route}?{text}" if text else route


def id_filter(key: str, ids: Sequence[str]) -> Expr | None:
    expr: Expr | None = None
    for value in ids:
        leaf = Compare(key, Op.EQ, UUID(value))
        expr = leaf if expr is None else Or(expr, leaf)
    return expr


def as_guids(ids: Iterable[str]) -> list[str]:
    """Distinct lower-case ids in first-seen order; values that are not GUIDs are dropped,
    since no record can have them as its key."""
    seen: dict[str, None] = {}
    for value in ids:
        try:
            seen.setdefault(str(UUID(value)), None)
        except (ValueError, AttributeError, TypeError):
            continue
    return list(seen)


class ODataSide:
    """Reads common to Business Central API v2.0 and the Dataverse Web API v9.2."""

    side: Side
    max_page_size: int = 5000
    """The largest ``odata.maxpagesize`` the service accepts."""

    def __init__(self, http: ODataHttp, settings: ApiSettings, specs: SpecSource) -> None:
        self._http = http
        self._settings = settings
        self._specs = specs
        self._page_size = max(1, min(settings.page_size, self.max_page_size))

    @property
    def stats(self) -> ApiStats:
        return self._http.stats

    @property
    def user_stats(self) -> list[UserStats]:
        """The side's traffic per application user (``stats`` is all of them)."""
        return self._http.users

    def spec(self, entity_set: str) -> EntitySpec:
        return self._specs(entity_set)

    def use_tables(self, tables: Iterable[TableInfo]) -> None:
        """Find the sets the catalog lacks (custom tables and pages) as ``tables``, the
        side's metadata, describes them: their route, key and modified-on field."""
        self._specs = described_specs(self.side, self._http.base_url.path, tables)

    async def collection(self, spec: EntitySpec) -> str:
        """The path of ``spec``'s collection."""
        return spec.route

    async def probe(self) -> None:
        """One small authenticated request: returns when the API answers these
        credentials, raises ``ApiError`` (or its kinds) when it does not."""
        path = await self._probe_path()
        reply = await self._http.send("GET", path)
        if reply.status >= 400:
            raise ApiError(
                f"GET {path}: {reply.status} {error_message(reply.data, reply.content)}",
                side=self.side,
                status=reply.status,
            )

    async def _probe_path(self) -> str:
        raise NotImplementedError

    def _page_headers(self) -> dict[str, str]:
        return {"Prefer": f"odata.maxpagesize={self._page_size}"}

    async def _read(self, link: str, headers: dict[str, str], entity_set: str) -> Reply:
        """One GET of a read of ``entity_set``: the credentials or a permission
        refused are ``ReadUnauthorized`` (a token the endpoint refused stays
        its ``TokenRefused``, which says why); other answers are the caller's."""
        try:
            return await self._http.send("GET", link, headers=headers)
        except TokenRefused:
            raise
        except ApiAuthError as exc:
            raise ReadUnauthorized(
                str(exc).removeprefix(f"{self.side}: "),
                side=self.side,
                status=exc.status,
                entity_set=entity_set,
            ) from exc

    def _refused(self, link: str, reply: Reply, entity_set: str) -> ReadRefused:
        """A 4xx answer to a read: the side would not serve that query."""
        return ReadRefused(
            f"GET {self._http.url(link).path}: {reply.status} "
            f"{error_message(reply.data, reply.content)}",
            side=self.side,
            status=reply.status,
            entity_set=entity_set,
        )

    async def _pages(
        self, first: str, headers: dict[str, str]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        link: str | None = first
        entity_set = self._http.url(first).path.rsplit("/", 1)[-1]
        while link is not None:
            reply = await self._read(link, headers, entity_set)
            if reply.status >= 400:
                raise self._refused(link, reply, entity_set)
            data = reply.data if isinstance(reply.data, dict) else {}
            values = data.get("value")
            if not isinstance(values, list):
                raise ApiError(
                    f"GET {self._http.url(link).path}: answer has no 'value' array",
                    side=self.side,
                    status=reply.status,
                )
            next_link = data.get("@odata.nextLink")
            link = next_link if isinstance(next_link, str) and next_link else None
            yield values

    async def _rows(
        self, spec: EntitySpec, first: str, headers: dict[str, str]
    ) -> AsyncIterator[list[Row]]:
        async for values in self._pages(first, headers):
            rows = [
                to_row(v, key=spec.key, stamp=spec.stamp, modified_by=spec.modified_by)
                for v in values
            ]
            self.stats.rows_read += len(rows)
            yield rows

    async def changed_since(
        self, entity_set: str, since: datetime, *, filter: Expr | None = None
    ) -> AsyncIterator[list[Row]]:
        spec = self.spec(entity_set)
        moment = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        expr = conjoin(Compare(spec.stamp, Op.GE, moment), filter)
        assert expr is not None
        first = query(
            await self.collection(spec),
            [("$filter", to_odata(expr)), ("$orderby", f"{spec.stamp} asc,{spec.key} asc")],
        )
        async for rows in self._rows(spec, first, self._page_headers()):
            if rows:
                yield rows

    async def read_all(
        self, entity_set: str, *, filter: Expr | None = None
    ) -> AsyncIterator[list[Row]]:
        spec = self.spec(entity_set)
        options = [("$orderby", f"{spec.key} asc")]
        if filter is not None:
            options.insert(0, ("$filter", to_odata(filter)))
        first = query(await self.collection(spec), options)
        async for rows in self._rows(spec, first, self._page_headers()):
            if rows:
                yield rows

    async def read_ids(self, entity_set: str) -> AsyncIterator[list[str]]:
        spec = self.spec(entity_set)
        first = query(
            await self.collection(spec), [("$select", spec.key), ("$orderby", f"{spec.key} asc")]
        )
        async for values in self._pages(first, self._page_headers()):
            ids = [str(v[spec.key]).lower() for v in values if v.get(spec.key) is not None]
            self.stats.rows_read += len(ids)
            if ids:
                yield ids

    async def read_versions(self, entity_set: str) -> AsyncIterator[list[Row]]:
        spec = self.spec(entity_set)
        first = query(
            await self.collection(spec),
            [("$select", f"{spec.key},{spec.stamp}"), ("$orderby", f"{spec.key} asc")],
        )
        async for rows in self._rows(spec, first, self._page_headers()):
            if rows:
                yield rows

    def track_changes(
        self, entity_set: str, delta_link: str | None = None
    ) -> AsyncIterator[Changes]:
        """No change tracking: the side's tables are read by their stamps."""
        return _untracked(self.side, entity_set)

    async def get_many(self, entity_set: str, ids: Sequence[str]) -> dict[str, Row]:
        spec = self.spec(entity_set)
        wanted = as_guids(ids)
        if not wanted:
            return {}
        route = await self.collection(spec)
        chunks = id_chunks(spec.key, wanted)

        async def one(chunk: list[str]) -> list[Row]:
            expr = id_filter(spec.key, chunk)
            assert expr is not None
            first = query(route, [("$filter", to_odata(expr))])
            return [
                row async for page in self._rows(spec, first, self._page_headers()) for row in page
            ]

        found: dict[str, Row] = {}
        for rows in await self.gather_all(one(c) for c in chunks):
            found.update((row.id, row) for row in rows)
        return found

    async def find(self, entity_set: str, filter: Expr, *, top: int | None = None) -> list[Row]:
        spec = self.spec(entity_set)
        options = [("$filter", to_odata(filter)), ("$orderby", f"{spec.key} asc")]
        headers = self._page_headers()
        if top is not None:
            if top <= 0:
                return []
            options.append(("$top", str(top)))
            headers = {}
        first = query(await self.collection(spec), options)
        found: list[Row] = []
        async for rows in self._rows(spec, first, headers):
            found.extend(rows)
            if top is not None and len(found) >= top:
                return found[:top]
        return found

    async def _fill_rows(
        self,
        entity_set: str,
        ops: Sequence[WriteOp],
        results: list[WriteResult],
        created: dict[int, str],
    ) -> None:
        """Replaces the ``Written(None)`` of a create or update (a server that ignored
        ``return=representation``) with the row read back; ``created`` holds the ids of
        creates taken from ``OData-EntityId`` headers."""
        wanted: dict[int, str] = {}
        for i, (op, result) in enumerate(zip(ops, results, strict=True)):
            if not isinstance(result, Written) or result.row is not None or isinstance(op, Delete):
                continue
            record_id = op.record_id or created.get(i)
            if record_id:
                wanted[i] = record_id.lower()
        if not wanted:
            return
        rows = await self.get_many(entity_set, list(wanted.values()))
        for i, record_id in wanted.items():
            row = rows.get(record_id)
            if row is not None:
                results[i] = Written(row)

    def _count(self, entity_set: str, results: Sequence[WriteResult]) -> None:
        written = sum(isinstance(r, Written) for r in results)
        self.stats.records_written += written
        self.stats.records_refused += len(results) - written
        structlog.get_logger().debug(
            "odata.write",
            side=self.side,
            entity_set=entity_set,
            ops=len(results),
            written=written,
            rejected=sum(isinstance(r, Rejected) for r in results),
            missing=sum(isinstance(r, Missing) for r in results),
            stale=sum(isinstance(r, Stale) for r in results),
        )

    async def gather_all(self, jobs: Iterable[Awaitable[T]]) -> list[T]:
        """The results of ``jobs``, run at most ``concurrency`` at a time. Every job runs
        to its end before the first failure is raised, so no request is left in flight
        when a read or write reports an error."""
        slots = asyncio.Semaphore(self._http.concurrency)

        async def bounded(job: Awaitable[T]) -> T:
            async with slots:
                return await job

        outcomes = await asyncio.gather(*(bounded(j) for j in jobs), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return cast(list[T], outcomes)

    async def aclose(self) -> None:
        await self._http.aclose()


async def _untracked(side: Side, entity_set: str) -> AsyncIterator[Changes]:
    raise ChangeTrackingUnavailable(f"{entity_set} does not track changes", side=side)
    yield Changes([])  # pragma: no cover - makes this an async generator


_WRITTEN_ID_HEADERS = ("odata-entityid", "location")


def entity_id_from(headers: Mapping[str, str]) -> str | None:
    """The id in an ``OData-EntityId`` or ``Location`` header (``…/accounts(<id>)``)."""
    for name in _WRITTEN_ID_HEADERS:
        value = headers.get(name)
        if value and value.endswith(")") and "(" in value:
            inner = value[value.rindex("(") + 1 : -1]
            try:
                return str(UUID(inner))
            except ValueError:
                continue
    return None


def classify(
    op: WriteOp,
    status: int,
    data: Any,
    raw: bytes,
    spec: EntitySpec,
    stale_codes: frozenset[str] = frozenset(),
) -> WriteResult | None:
    """The result of one write from its response; None when the failure is transient
    (429, 5xx) and the op should be sent again.

    412 on an update or delete is a stale ETag; so is a 409 whose error code is in
    ``stale_codes`` (Business Central answers an If-Match mismatch with 409
    ``Request_EntityChanged``). A 412 on a create is Dataverse's DuplicateRecord (an
    alternate key already taken): that record is refused."""
    if 200 <= status < 300:
        if isinstance(op, Delete):
            return Written(None)
        if isinstance(data, dict) and data.get(spec.key) is not None:
            return Written(
                to_row(data, key=spec.key, stamp=spec.stamp, modified_by=spec.modified_by)
            )
        return Written(None)
    if status == 429 or status >= 500 or status == 408:
        return None
    message = error_message(data, raw)
    if status == 404 and isinstance(op, Update | Delete):
        return Missing(message)
    conditional = isinstance(op, Update | Delete)
    if conditional and (status == 412 or (status == 409 and error_code(data) in stale_codes)):
        return Stale(message)
    return Rejected(status, message)


def error_code(data: Any) -> str | None:
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
