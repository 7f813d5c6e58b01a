"""BC's JSON ``$batch``: ``{"requests": [{id, method, url, headers, body}]}`` →
``{"responses": [{id, status, headers, body}]}``.

Follows "Using OData transactional $batch requests" (``dev-itpro/webservices/
use-odata-batch.md``): the inner requests run in order; with ``Isolation: snapshot`` they
share one transaction and, if any fails, none of their changes stay (the responses still
report each request's own outcome, as the documented example shows). Without it each
runs on its own. A batch holds at most 100 requests, BC's documented operation limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson

from tablesync.emulators.common.messages import ApiRequest, ApiResponse, parse_query
from tablesync.emulators.common.payload import json_object
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.runtime import handle_safely
from tablesync.emulators.common.sql import Executor

if TYPE_CHECKING:
    from tablesync.emulators.bc.service import BcService

__all__ = ["MAX_REQUESTS", "run"]

MAX_REQUESTS = 100
_METHODS = frozenset({"GET", "POST", "PATCH", "DELETE"})


def _inner(service: BcService, outer: ApiRequest, item: dict[str, Any]) -> ApiRequest:
    method = item.get("method")
    url = item.get("url")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise ApiProblem(Kind.BAD_REQUEST, f"Request '{item.get('id')}' has no valid method.")
    if not isinstance(url, str) or not url:
        raise ApiProblem(Kind.BAD_REQUEST, f"Request '{item.get('id')}' has no url.")
    parts = urlsplit(url)
    path = unquote(parts.path)
    root = outer.root
    if path.startswith("/"):
        root = next((r for r in service.roots if path.startswith(r + "/")), "")
        if not root:
            raise ApiProblem(Kind.NO_RESOURCE, f"The url '{url}' is not under this API.")
        path = path[len(root) + 1 :]
    if path != "$batch" and not path.startswith("companies"):
        # Relative to the company, as with the Company header in BC's own example.
        path = f"companies({service.company_id})/{path}"
    raw_headers = item.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise ApiProblem(Kind.BAD_REQUEST, f"Request '{item.get('id')}' has malformed headers.")
    body = item.get("body")
    service_root = outer.service_root[: -len(outer.root)] + root
    return ApiRequest(
        method=method.upper(),
        path=path,
        query=parse_query(parts.query),
        raw_query=parts.query,
        headers={str(k).lower(): str(v) for k, v in raw_headers.items()},
        body=b"" if body is None else orjson.dumps(body),
        service_root=service_root,
        root=root,
    )


def _response_json(item_id: object, response: ApiResponse) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": item_id,
        "status": response.status,
        "headers": {k.lower(): v for k, v in response.headers},
    }
    if response.body:
        is_json = (response.header("content-type") or "").startswith("application/json")
        entry["body"] = orjson.loads(response.body) if is_json else response.body.decode()
    return entry


async def _one(
    service: BcService, outer: ApiRequest, item: object, db: Executor
) -> tuple[object, ApiResponse]:
    if not isinstance(item, dict):
        problem = ApiProblem(Kind.BAD_REQUEST, "Each request of a batch must be a JSON object.")
        return None, service.style.response(problem)
    item_id = item.get("id")
    try:
        inner = _inner(service, outer, item)
    except ApiProblem as refusal:
        return item_id, service.style.response(refusal)
    if inner.path == "$batch":
        nested = ApiProblem(Kind.BAD_REQUEST, "A batch cannot contain another batch.")
        return item_id, service.style.response(nested)
    return item_id, await handle_safely(service, inner, db)


async def _in_snapshot(
    service: BcService, outer: ApiRequest, items: list[object], conn: Any
) -> list[dict[str, object]]:
    entries = []
    failed = False
    transaction = conn.transaction()
    await transaction.start()
    try:
        for item in items:
            savepoint = conn.transaction()
            await savepoint.start()
            item_id, response = await _one(service, outer, item, conn)
            if response.status >= 400:
                failed = True
                await savepoint.rollback()
            else:
                await savepoint.commit()
            entries.append(_response_json(item_id, response))
    except BaseException:
        await transaction.rollback()
        raise
    if failed:
        await transaction.rollback()
    else:
        await transaction.commit()
    return entries


async def run(service: BcService, request: ApiRequest, db: Executor) -> ApiResponse:
    content_type = request.header("content-type") or ""
    if not content_type.startswith("application/json"):
        raise ApiProblem(
            Kind.BAD_REQUEST,
            "This emulator accepts JSON batches only (Content-Type: application/json).",
        )
    items = json_object(request).get("requests")
    if not isinstance(items, list):
        raise ApiProblem(Kind.BAD_REQUEST, "A JSON batch needs a 'requests' array.")
    if len(items) > MAX_REQUESTS:
        raise ApiProblem(
            Kind.BAD_REQUEST,
            f"A batch can contain at most {MAX_REQUESTS} operations; this one has {len(items)}.",
        )
    if any(isinstance(i, dict) and "atomicityGroup" in i for i in items):
        raise ApiProblem(
            Kind.NOT_SUPPORTED,
            "atomicityGroup is not supported by this emulator; send 'Isolation: snapshot' to "
            "make the whole batch one transaction.",
            status=400,
        )
    snapshot = (request.header("isolation") or "").lower() == "snapshot"
    run_items = _in_snapshot if snapshot else _independently
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            entries = await run_items(service, request, items, conn)
    else:
        entries = await run_items(service, request, items, db)
    return ApiResponse.json(200, {"responses": entries})


async def _healthy(conn: Any) -> bool:
    """False when a failed statement aborted the surrounding transaction."""
    try:
        await conn.fetchval("SELECT 1")
    except asyncpg.InFailedSQLTransactionError:
        return False
    return True


async def _independently(
    service: BcService, outer: ApiRequest, items: list[object], conn: Any
) -> list[dict[str, object]]:
    # One transaction saves a WAL flush per request; each request still stands alone: if a
    # database error breaks the transaction, the batch is replayed from the start with
    # every request committed on its own.
    transaction = conn.transaction()
    await transaction.start()
    entries: list[dict[str, object]] = []
    clean = True
    try:
        for item in items:
            item_id, response = await _one(service, outer, item, conn)
            if response.status >= 400 and not await _healthy(conn):
                clean = False
                break
            entries.append(_response_json(item_id, response))
    except BaseException:
        await transaction.rollback()
        raise
    if clean:
        await transaction.commit()
        return entries
    await transaction.rollback()
    return [_response_json(*await _one(service, outer, item, conn)) for item in items]
