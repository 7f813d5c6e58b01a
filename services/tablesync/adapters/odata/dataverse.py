"""The Dataverse Web API v9.2 connector.

Writes go in bulk messages where a write has ``bulk_min`` or more records of one kind
(below), else through ``$batch``.

Bulk ("Use bulk operation messages"): ``POST <set>/Microsoft.Dynamics.CRM.<message>``
with ``{"Targets": [...]}``, at most ``bulk_size`` records a request, every target
carrying ``"@odata.type": "Microsoft.Dynamics.CRM.<logical name>"``. Each message keeps
the meaning of the single write it replaces:

- ``Create`` with ``record_id`` and ``only_new`` → ``CreateMultiple``, the id in the
  target's primary key column: a row that exists fails it (nothing is written over);
- ``Create`` with ``record_id`` without ``only_new`` → ``UpsertMultiple``, the row named
  by ``"@odata.id": "<set>(<id>)"``;
- ``Update`` without an etag → ``UpdateMultiple``: a row that does not exist fails it
  (no row is made again).

Creates without an id and updates with an etag (no target can carry an ``If-Match``)
stay on ``$batch``, as does a record that a write names twice. On a standard table a
bulk request succeeds or fails as a whole: one that is refused (4xx) is sent again
through ``$batch``, which gives each record its own result (412 ``Rejected`` for a
create whose row exists, ``Missing`` for an update whose row does not) and writes the
rest: the fallback the page recommends. 429 and 5xx follow the client's retry policy (``http``). The
messages answer no rows, so the rows written are read back, one ``$batch`` of
``GET`` requests (by id) per write. A write of more than ``bulk_split_min`` records of
one kind goes out as several bulk requests side by side ("Send parallel requests"), each
of at least that many records, as many as the client's connections allow, and never
more than ``bulk_size`` a request.

``$batch``: batches of ``batch_size`` records (at most 1000, the
service's limit), one change set per record and ``Prefer: odata.continue-on-error``,
so a refused record rolls back only itself. Each request asks for
``Prefer: return=representation`` and so answers with the row as stored after it.

- ``Create`` with ``record_id`` → ``PATCH /<set>(<id>)``: with ``only_new``, under
  ``If-None-Match: *``, which creates the row or answers 412 where it exists (the
  record ``Rejected``, as a duplicate is), never writing over it; without,
  Dataverse's upsert, which creates the row with that id or updates the existing one
  (a restore replayed makes no second row).
- ``Create`` without id → ``POST /<set>``.
- ``Update`` → ``PATCH /<set>(<id>)`` with ``If-Match: <etag>``, or ``If-Match: *`` so an
  update never creates a deleted row again (404 → ``Missing``).
- ``Delete`` → ``DELETE /<set>(<id>)`` with ``If-Match: <etag>`` when one is given.
- ``Ref`` values → ``<navigation>@odata.bind: "/<set>(<id>)"``; ``None`` bound to a
  navigation property disassociates the lookup.

Per record: 404 on an update or delete → ``Missing``, 412 on one → ``Stale``, another
4xx → ``Rejected`` with the API's message; 429 and 5xx → sent again in a later batch
(the change set was rolled back), ``Rejected`` once the retry budget is spent. A
batch refused as a whole makes all its records ``Rejected``, unless its body lists
the parts processed before the failure:
those get their own results and the rest are sent again. A batch holding a ``POST``
create that failed in a way that may have applied it raises ``ApiUnavailable`` rather
than risk creating twice (see ``http``).

Reads of changes follow "Use change tracking to synchronize data with external systems":
``Prefer: odata.track-changes`` on a first read of every row, whose last page carries an
``@odata.deltaLink``; the link then gives the rows changed and a ``$deletedEntity`` entry
per row deleted since. No ``Preference-Applied: odata.track-changes`` on the first page
means the table does not track changes (``ChangeTrackingUnavailable``); the error
``ExpiredVersionStamp`` means the link is too old (``DeltaLinkExpired``).

The forms follow the Web API pages "Execute batch operations", "Update and delete table
rows" (upsert), "Perform conditional operations", "Associate and disassociate tables",
"Use bulk operation messages" and the reference of the CreateMultiple, UpdateMultiple
and UpsertMultiple actions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal
from uuid import UUID

import httpx
import orjson
import structlog

from tablesync.adapters.odata.base import (
    ODataSide,
    as_guids,
    classify,
    entity_id_from,
    error_code,
    id_chunks,
    id_filter,
    query,
)
from tablesync.adapters.odata.batch import (
    BatchRequest,
    BatchResponse,
    decode_multipart,
    encode_changesets,
    encode_requests,
)
from tablesync.adapters.odata.entities import EntitySpec, SpecSource, catalog_specs
from tablesync.adapters.odata.http import ODataHttp, error_message
from tablesync.adapters.odata.metadata import (
    MetadataCache,
    read_dataverse,
    read_dataverse_navigations,
)
from tablesync.adapters.odata.retry import RetryPolicy, retry_after_s
from tablesync.adapters.odata.rows import to_row
from tablesync.core.events import Side
from tablesync.core.filters import to_odata
from tablesync.core.metadata import TableInfo
from tablesync.core.records import (
    Changes,
    Create,
    Delete,
    Ref,
    Rejected,
    Row,
    Update,
    WriteOp,
    WriteResult,
    WriteValue,
    Written,
)
from tablesync.errors import ApiError, ChangeTrackingUnavailable, DeltaLinkExpired
from tablesync.settings import ApiSettings

__all__ = ["EXPIRED_VERSION_STAMP", "NOT_TRACKED", "DataverseApi"]

MAX_BATCH = 1000
_BIND = "@odata.bind"
_NAMESPACE = "Microsoft.Dynamics.CRM."
Message = Literal["CreateMultiple", "UpdateMultiple", "UpsertMultiple"]
_TRACK = "odata.track-changes"
EXPIRED_VERSION_STAMP = "0x80044352"
"""``ExpiredVersionStamp``: the delta link is older than the change tracking retention."""
NOT_TRACKED = "0x80072491"
"""``ChangeTrackingNotEnabledForEntity``."""


class DataverseApi(ODataSide):
    """``SideApi`` over the Dataverse Web API v9.2."""

    side: Side = "dataverse"

    def __init__(
        self,
        settings: ApiSettings,
        *,
        specs: SpecSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http: ODataHttp | None = None,
    ) -> None:
        client = http or ODataHttp("dataverse", settings, transport=transport)
        super().__init__(
            client, settings, specs or catalog_specs("dataverse", client.base_url.path)
        )
        self._policy = RetryPolicy.from_settings(settings)
        self._batch_size = max(1, min(settings.batch_size, MAX_BATCH))
        self._bulk_min = settings.bulk_min
        self._bulk_size = max(1, settings.bulk_size)
        self._bulk_split_min = settings.bulk_split_min
        self._metadata = MetadataCache()

    async def _probe_path(self) -> str:
        # The Web API's own "who am I": answered for every authenticated user.
        return "WhoAmI"

    async def describe(
        self, entity_set: str | None = None, *, refresh: bool = False
    ) -> list[TableInfo]:
        """The tables the environment defines (without column details), or the one whose
        entity set or logical name is ``entity_set`` with them; read once, again with
        ``refresh``."""
        key = "" if entity_set is None else f"table:{entity_set}"
        return await self._metadata.get(
            key, lambda: read_dataverse(self._http, entity_set), refresh=refresh
        )

    async def lookup_navigations(self) -> dict[str, dict[str, str]]:
        """Per table, each lookup's navigation property (``$metadata``), read each time."""
        return await read_dataverse_navigations(self._http)

    async def track_changes(
        self, entity_set: str, delta_link: str | None = None
    ) -> AsyncIterator[Changes]:
        spec = self.spec(entity_set)
        headers = {"Prefer": f"{_TRACK},odata.maxpagesize={self._page_size}"}
        link: str | None = delta_link or await self.collection(spec)
        first = True
        while link is not None:
            reply = await self._read(link, headers, entity_set)
            path = self._http.url(link).path
            if reply.status >= 400:
                message = f"GET {path}: {reply.status} {error_message(reply.data, reply.content)}"
                code = error_code(reply.data)
                if code == EXPIRED_VERSION_STAMP:
                    raise DeltaLinkExpired(message, side=self.side, status=reply.status)
                if code == NOT_TRACKED:
                    raise ChangeTrackingUnavailable(message, side=self.side, status=reply.status)
                raise self._refused(link, reply, entity_set)
            if (
                first
                and delta_link is None
                and _TRACK not in reply.headers.get("preference-applied", "")
            ):
                raise ChangeTrackingUnavailable(
                    f"GET {path}: {entity_set} does not track changes "
                    "(ChangeTrackingEnabled is false)",
                    side=self.side,
                )
            first = False
            data = reply.data if isinstance(reply.data, dict) else {}
            values = data.get("value")
            if not isinstance(values, list):
                raise ApiError(
                    f"GET {path}: answer has no 'value' array", side=self.side, status=reply.status
                )
            rows, deleted = [], []
            for value in values:
                gone = _deleted_id(value)
                if gone is not None:
                    deleted.append(gone)
                elif isinstance(value, dict) and value.get(spec.key) is not None:
                    rows.append(
                        to_row(value, key=spec.key, stamp=spec.stamp, modified_by=spec.modified_by)
                    )
            self.stats.rows_read += len(rows) + len(deleted)
            next_link = data.get("@odata.nextLink")
            link = next_link if isinstance(next_link, str) and next_link else None
            delta = data.get("@odata.deltaLink")
            last = isinstance(delta, str) and delta and link is None
            yield Changes(rows, deleted, delta if last else None)

    async def write(self, entity_set: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        spec = self.spec(entity_set)
        results: list[WriteResult | None] = [None] * len(ops)
        created: dict[int, str] = {}
        bulk, rest = self._bulk_plan(spec, ops)
        bulk_written: list[int] = []
        jobs = [
            self._write_bulk(spec, ops, message, chunk, results, created, bulk_written)
            for message, chunk in bulk
        ]
        jobs += [
            self._write_batch(spec, ops, chunk, results, created)
            for chunk in _chunks(rest, self._batch_size)
        ]
        await self.gather_all(jobs)
        if bulk_written:
            # Every bulk request of the write read back at once: one request more, not one each.
            ids = {i: _record_id(ops[i]) for i in sorted(bulk_written)}
            rows = await self._read_back(spec, list(ids.values()))
            for i, record_id in ids.items():
                results[i] = Written(rows.get(record_id))
        final = [r if r is not None else Rejected(0, "no response") for r in results]
        await self._fill_rows(entity_set, ops, final, created)
        self._count(entity_set, final)
        return final

    def _bulk_plan(
        self, spec: EntitySpec, ops: Sequence[WriteOp]
    ) -> tuple[list[tuple[Message, list[int]]], list[int]]:
        """The bulk requests of a write (message, op indexes) and the ops left for
        ``$batch``, in order."""
        if self._bulk_min <= 0 or _logical_name(spec) is None:
            return [], list(range(len(ops)))
        named: dict[str, int] = {}
        for op in ops:
            if op.record_id is not None:
                named[op.record_id.lower()] = named.get(op.record_id.lower(), 0) + 1
        kinds: dict[Message, list[int]] = {}
        rest: list[int] = []
        for i, op in enumerate(ops):
            message = _bulk_message(op)
            # A record written twice in one write keeps the order $batch gives it.
            if message is None or op.record_id is None or named[op.record_id.lower()] > 1:
                rest.append(i)
            else:
                kinds.setdefault(message, []).append(i)
        bulk: list[tuple[Message, list[int]]] = []
        for message, indexes in kinds.items():
            if len(indexes) < self._bulk_min:
                rest.extend(indexes)
            else:
                bulk.extend((message, chunk) for chunk in _chunks(indexes, self._split(indexes)))
        return bulk, sorted(rest)

    def _split(self, indexes: list[int]) -> int:
        """Records per bulk request of one message: at most ``bulk_size``, and
        fewer so that a large write goes out as requests side by side (up to the
        connections the client has), none of fewer than ``bulk_split_min``."""
        least = self._bulk_split_min
        if least <= 0 or len(indexes) <= least:
            return self._bulk_size
        parts = min(self._http.concurrency, len(indexes) // least)
        return max(1, min(self._bulk_size, -(-len(indexes) // max(1, parts))))

    async def _write_bulk(
        self,
        spec: EntitySpec,
        ops: Sequence[WriteOp],
        message: Message,
        chunk: list[int],
        results: list[WriteResult | None],
        created: dict[int, str],
        written: list[int],
    ) -> None:
        """Sends one bulk request; the ops it wrote are added to ``written``, to
        be read back (the messages answer no rows)."""
        logical = _logical_name(spec)
        assert logical is not None
        targets = [self._target(spec, logical, message, ops[i]) for i in chunk]
        path = f"{await self.collection(spec)}/{_NAMESPACE}{message}"
        # Every target names its row, so sending the request again writes nothing twice.
        reply = await self._http.send(
            "POST",
            path,
            headers={"Content-Type": "application/json; charset=utf-8"},
            content=orjson.dumps({"Targets": targets}),
            idempotent=True,
        )
        if reply.status >= 400:
            structlog.get_logger().info(
                "dataverse.bulk_refused",
                entity_set=spec.entity_set,
                message=message,
                records=len(chunk),
                status=reply.status,
                code=error_code(reply.data),
            )
            await self.gather_all(
                self._write_batch(spec, ops, part, results, created)
                for part in _chunks(chunk, self._batch_size)
            )
            return
        written.extend(chunk)

    @staticmethod
    def _target(spec: EntitySpec, logical: str, message: Message, op: WriteOp) -> dict[str, Any]:
        assert not isinstance(op, Delete)
        record_id = _record_id(op)
        target: dict[str, Any] = {"@odata.type": f"{_NAMESPACE}{logical}", **_payload(op.values)}
        if message == "UpsertMultiple":
            target["@odata.id"] = f"{spec.entity_set}({record_id})"
        else:
            target[spec.key] = record_id
        return target

    async def _read_back(self, spec: EntitySpec, ids: list[str]) -> dict[str, Row]:
        """The rows of ``ids``: one ``$batch`` of GETs by id (a filter per request stays
        within the URL limits); a part that failed or was paged is read again alone."""
        route = self._path(spec)
        chunks = id_chunks(spec.key, as_guids(ids))
        if not chunks:
            return {}
        requests = []
        for chunk in chunks:
            expr = id_filter(spec.key, chunk)
            assert expr is not None
            page = min(self.max_page_size, max(self._page_size, len(chunk)))
            url = query(route, [("$filter", to_odata(expr))])
            requests.append(BatchRequest("GET", url, {"Prefer": f"odata.maxpagesize={page}"}))
        content_type, body = encode_requests(requests)
        reply = await self._http.send(
            "POST",
            "$batch",
            headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
            content=body,
            idempotent=True,
            decode=_decode_batch,
        )
        parts: list[list[BatchResponse]] = reply.data if reply.status < 400 else []
        found: dict[str, Row] = {}
        again: list[str] = []
        for position, chunk in enumerate(chunks):
            response = parts[position][-1] if position < len(parts) else None
            data = response.data if response is not None else None
            values = data.get("value") if isinstance(data, dict) else None
            if (
                response is None
                or response.status != 200
                or not isinstance(data, dict)
                or not isinstance(values, list)
                or data.get("@odata.nextLink")
            ):
                again.extend(chunk)
                continue
            for value in values:
                if isinstance(value, dict) and value.get(spec.key) is not None:
                    row = to_row(
                        value, key=spec.key, stamp=spec.stamp, modified_by=spec.modified_by
                    )
                    found[row.id] = row
            self.stats.rows_read += len(values)
        if again:
            found.update(await self.get_many(spec.entity_set, again))
        return found

    async def _write_batch(
        self,
        spec: EntitySpec,
        ops: Sequence[WriteOp],
        pending: list[int],
        results: list[WriteResult | None],
        created: dict[int, str],
    ) -> None:
        retries = 0
        while pending:
            content_type, body = encode_changesets([self._request(spec, ops[i]) for i in pending])
            reply = await self._http.send(
                "POST",
                "$batch",
                headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
                content=body,
                idempotent=all(_repeatable(ops[i]) for i in pending),
                decode=_decode_batch,
            )
            parts: list[list[BatchResponse]] = (
                reply.data if reply.status < 400 else _error_parts(reply.headers, reply.content)
            )
            if not parts:
                message = error_message(reply.data, reply.content)
                for i in pending:
                    results[i] = Rejected(reply.status, message)
                return
            transient: list[int] = []
            wait: float | None = None
            for i, responses in zip(pending, parts, strict=False):
                response = _outcome(responses)
                result = classify(ops[i], response.status, response.data, response.raw, spec)
                if result is None:
                    transient.append(i)
                    results[i] = Rejected(
                        response.status, error_message(response.data, response.raw)
                    )
                    if response.status == 429:
                        self.stats.throttled += 1
                    after = retry_after_s(response.headers.get("retry-after"))
                    if after is not None:
                        wait = max(wait or 0.0, after)
                        self._http.hold_back(after, reply.user)
                    continue
                results[i] = result
                if isinstance(result, Written) and result.row is None:
                    found = entity_id_from(response.headers)
                    if found is not None:
                        created[i] = found
            # Parts missing from an error response were never processed: send them again.
            unprocessed = pending[len(parts) :]
            if transient:
                if retries >= self._policy.max_retries:
                    transient = []
                else:
                    retries += 1
                    self.stats.retries += 1
                    await self._http.pause(
                        wait if wait is not None else self._policy.backoff_s(retries - 1)
                    )
            pending = sorted(transient + unprocessed)

    def _request(self, spec: EntitySpec, op: WriteOp) -> BatchRequest:
        collection = self._path(spec)
        represent = {"Prefer": "return=representation"}
        if isinstance(op, Create):
            if op.record_id is None:
                return BatchRequest("POST", collection, represent, _payload(op.values))
            headers = {**represent, "If-None-Match": "*"} if op.only_new else represent
            return BatchRequest(
                "PATCH", f"{collection}({op.record_id.lower()})", headers, _payload(op.values)
            )
        if isinstance(op, Update):
            headers = {**represent, "If-Match": op.etag or "*"}
            return BatchRequest(
                "PATCH", f"{collection}({op.record_id.lower()})", headers, _payload(op.values)
            )
        headers = {"If-Match": op.etag} if op.etag else {}
        return BatchRequest("DELETE", f"{collection}({op.record_id.lower()})", headers)

    def _path(self, spec: EntitySpec) -> str:
        # Requests inside a batch carry an absolute path, as in the documentation's examples.
        if spec.route.startswith("/"):
            return spec.route
        return f"{self._http.base_url.path.rstrip('/')}/{spec.route}"


def _chunks(indexes: list[int], size: int) -> list[list[int]]:
    return [indexes[start : start + size] for start in range(0, len(indexes), size)]


def _bulk_message(op: WriteOp) -> Message | None:
    """The bulk message that writes ``op`` as its single request would; None for none."""
    if isinstance(op, Create) and op.record_id is not None:
        return "CreateMultiple" if op.only_new else "UpsertMultiple"
    if isinstance(op, Update) and op.etag is None:
        return "UpdateMultiple"
    return None


def _record_id(op: WriteOp) -> str:
    assert op.record_id is not None
    return op.record_id.lower()


def _logical_name(spec: EntitySpec) -> str | None:
    """The table's logical name, from its primary key (``<logical name>id``, the
    convention every Dataverse table follows); None when the key is not so named."""
    if spec.key.endswith("id") and len(spec.key) > 2:
        return spec.key[:-2]
    return None


def _payload(values: dict[str, WriteValue]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Ref):
            bind = name if name.endswith(_BIND) else f"{name}{_BIND}"
            body[bind] = f"/{value.entity_set}({value.id.lower()})"
        else:
            body[name] = value
    return body


def _deleted_id(value: object) -> str | None:
    """The id of a ``$deletedEntity`` entry (a GUID, or an entity-id URL ending in one)."""
    if not isinstance(value, dict):
        return None
    context = value.get("@odata.context")
    if not (isinstance(context, str) and context.endswith("$deletedEntity")):
        return None
    raw = value.get("id")
    if not isinstance(raw, str):
        return None
    if raw.endswith(")") and "(" in raw:
        raw = raw[raw.rindex("(") + 1 : -1]
    try:
        return str(UUID(raw))
    except ValueError:
        return None


def _repeatable(op: WriteOp) -> bool:
    """Whether sending ``op`` twice has the effect of sending it once (bar a Stale)."""
    return not (isinstance(op, Create) and op.record_id is None)


def _decode_batch(response: httpx.Response) -> list[list[BatchResponse]]:
    return decode_multipart(response.headers.get("content-type", ""), response.content)


def _error_parts(headers: httpx.Headers, content: bytes) -> list[list[BatchResponse]]:
    """The parts of a batch that failed as a whole, when its body still lists them (a
    server that stops at the first failure answers with the parts it processed)."""
    try:
        return decode_multipart(headers.get("content-type", ""), content)
    except ValueError:
        return []


def _outcome(responses: list[BatchResponse]) -> BatchResponse:
    """The response that decides a change set's result: its first failure, else its last."""
    for response in responses:
        if response.status >= 400:
            return response
    return responses[-1]
