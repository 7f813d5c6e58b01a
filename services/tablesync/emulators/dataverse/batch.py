"""Dataverse ``$batch``: ``multipart/mixed`` requests with change sets.

Follows "Execute batch operations using the Web API":

- requests run in order; a request outside a change set runs on its own;
- a change set is one transaction: all of its requests commit or none does; a failed
  change set answers with the one failed request's response (with its Content-ID);
- ``$<Content-ID>`` refers, later in the same change set, to the row an earlier request
  created, in a URL (``PATCH $1``) or in a bind (``"x@odata.bind": "$1"``); a reference
  to an unknown Content-ID is a 400;
- without ``Prefer: odata.continue-on-error`` the batch stops at the first failure and
  answers with that failure's status; with it every request runs and the batch is 200;
- GET is not allowed inside a change set; a batch holds at most 1,000 requests;
- the bulk messages (``CreateMultiple`` …) are refused inside a batch (501): the
  documentation does not say that a batch may hold them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import asyncpg

from tablesync.emulators.common.messages import ApiRequest, ApiResponse, parse_query
from tablesync.emulators.common.multipart import (
    Composer,
    Part,
    boundary_of,
    http_response_part,
    parse_http_request,
    split_parts,
)
from tablesync.emulators.common.prefer import parse_prefer
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.runtime import handle_safely
from tablesync.emulators.common.sql import Executor
from tablesync.emulators.dataverse.bulk import is_bulk

if TYPE_CHECKING:
    from tablesync.emulators.dataverse.service import DataverseService

__all__ = ["MAX_REQUESTS", "run"]

MAX_REQUESTS = 1000
_INHERITED = ("mscrmcallerid", "callerobjectid")


class _Stop(Exception):
    """The batch stops here (a failure without odata.continue-on-error)."""


def _target_path(service: DataverseService, target: str, refs: dict[str, str]) -> tuple[str, str]:
    """(path relative to the service root, query) of a request line's target."""
    if target.startswith("$"):
        content_id, slash, rest = target[1:].partition("/")
        if content_id not in refs:
            raise ApiProblem(
                Kind.BAD_REQUEST,
                f"Content-ID Reference: '${content_id}' does not exist in the batch context.",
            )
        return refs[content_id] + (slash + rest if slash else ""), ""
    parts = urlsplit(target)
    path = unquote(parts.path)
    for root in service.roots:
        marker = path.find(root + "/")
        if marker >= 0:
            return path[marker + len(root) + 1 :], parts.query
    if path.startswith("/") or "://" in target:
        raise ApiProblem(Kind.NO_RESOURCE, f"The URL '{target}' is not under {service.roots[0]}.")
    return path, parts.query


def _inner(
    service: DataverseService, outer: ApiRequest, part: Part, refs: dict[str, str]
) -> ApiRequest:
    try:
        message = parse_http_request(part.content)
    except ValueError as exc:
        raise ApiProblem(Kind.BAD_REQUEST, f"Malformed batch part: {exc}.") from None
    path, query = _target_path(service, message.target, refs)
    headers = dict(message.headers)
    for name in _INHERITED:
        if name in outer.headers and name not in headers:
            headers[name] = outer.headers[name]
    if is_bulk(path):
        raise ApiProblem(
            Kind.NOT_SUPPORTED,
            f"'{path.rpartition('/')[2]}' is not supported inside $batch by this emulator; "
            "send it as a request of its own.",
        )
    return ApiRequest(
        method=message.method,
        path=path,
        query=parse_query(query),
        raw_query=query,
        headers=headers,
        body=message.body,
        service_root=outer.service_root,
        root=outer.root,
        references=dict(refs),
    )


def _created_path(response: ApiResponse, service_root: str) -> str | None:
    location = response.header("OData-EntityId") or response.header("Location")
    if location is None:
        return None
    return location[len(service_root) + 1 :] if location.startswith(service_root) else location


def _part_bytes(response: ApiResponse, content_id: str | None) -> bytes:
    return http_response_part(response.status, response.headers, response.body, content_id)


async def _single(
    service: DataverseService, outer: ApiRequest, part: Part, db: Executor
) -> ApiResponse:
    try:
        inner = _inner(service, outer, part, {})
    except ApiProblem as refusal:
        return service.style.response(refusal)
    if inner.path.rstrip("/") == "$batch":
        nested = ApiProblem(Kind.BAD_REQUEST, "A batch cannot contain another batch.")
        return service.style.response(nested)
    return await handle_safely(service, inner, db)


class _Unsure(Exception):
    """A change set failed in the fast pass: its effects may be half done."""


async def _change_set(
    service: DataverseService, outer: ApiRequest, part: Part, conn: Any, fast: bool
) -> tuple[bytes, ApiResponse | None]:
    """The change set's response part, and its failed response if it failed.

    ``fast`` runs it without its own savepoint, which saves two round trips a
    change set; a failure then raises ``_Unsure`` and the caller runs the batch
    again the careful way, every change set in a savepoint."""
    boundary = boundary_of(part.headers.get("content-type"))
    if boundary is None:
        failure = service.style.response(
            ApiProblem(Kind.BAD_REQUEST, "A change set needs a multipart boundary.")
        )
        return _part_bytes(failure, None), failure
    refs: dict[str, str] = {}
    done: list[bytes] = []
    transaction = conn.transaction()
    if not fast:
        await transaction.start()
    try:
        for inner_part in split_parts(part.content, boundary):
            content_id = inner_part.headers.get("content-id")
            response = await _change_set_request(service, outer, inner_part, conn, refs)
            if response.status >= 400:
                if fast:
                    raise _Unsure
                await transaction.rollback()
                return _part_bytes(response, content_id), response
            created = _created_path(response, outer.service_root)
            if content_id is not None and created is not None:
                refs[content_id] = created
            done.append(_part_bytes(response, content_id))
    except BaseException:
        if not fast:
            await transaction.rollback()
        raise
    if not fast:
        await transaction.commit()
    inner_boundary = f"changesetresponse_{uuid.uuid4()}"
    composer = Composer(inner_boundary)
    for chunk in done:
        composer.add(chunk)
    head = f"Content-Type: multipart/mixed; boundary={inner_boundary}\r\n\r\n".encode()
    return head + composer.body(), None


async def _change_set_request(
    service: DataverseService, outer: ApiRequest, part: Part, conn: Any, refs: dict[str, str]
) -> ApiResponse:
    try:
        inner = _inner(service, outer, part, refs)
    except ApiProblem as refusal:
        return service.style.response(refusal)
    if inner.method == "GET":
        return service.style.response(
            ApiProblem(Kind.BAD_REQUEST, "GET requests are not allowed within a change set.")
        )
    return await handle_safely(service, inner, conn)


async def _healthy(conn: Any) -> bool:
    """False when a failed statement aborted the surrounding transaction."""
    try:
        await conn.fetchval("SELECT 1")
    except asyncpg.InFailedSQLTransactionError:
        return False
    return True


async def _run_parts(
    service: DataverseService,
    request: ApiRequest,
    parts: list[Part],
    conn: Any,
    keep_going: bool,
    shared: bool,
    fast: bool = False,
) -> tuple[list[bytes], int, bool]:
    """The response parts, the batch status, and False when a shared transaction broke."""
    out: list[bytes] = []
    status = 200
    for part in parts:
        content_type = part.headers.get("content-type", "")
        if content_type.startswith("multipart/mixed"):
            chunk, failure = await _change_set(service, request, part, conn, fast)
        else:
            response = await _single(service, request, part, conn)
            chunk = _part_bytes(response, part.headers.get("content-id"))
            failure = response if response.status >= 400 else None
            if failure is not None and shared and not await _healthy(conn):
                return out, status, False
        out.append(chunk)
        if failure is not None and not keep_going:
            status = failure.status
            break
    return out, status, True


async def _execute(
    service: DataverseService, request: ApiRequest, parts: list[Part], conn: Any, keep_going: bool
) -> tuple[list[bytes], int]:
    # One transaction for the whole batch saves a WAL flush per request. Each request still
    # stands alone: a failed change set rolls back to its savepoint, and if a request outside
    # any change set breaks the transaction with a database error, the batch is replayed
    # from the start with every request committed on its own.
    transaction = conn.transaction()
    await transaction.start()
    try:
        # First without a savepoint per change set: most batches fail nowhere.
        chunks, status, clean = await _run_parts(
            service, request, parts, conn, keep_going, True, fast=True
        )
    except _Unsure:
        await transaction.rollback()
        transaction = conn.transaction()
        await transaction.start()
        try:
            chunks, status, clean = await _run_parts(
                service, request, parts, conn, keep_going, True
            )
        except BaseException:
            await transaction.rollback()
            raise
    except BaseException:
        await transaction.rollback()
        raise
    if clean:
        await transaction.commit()
        return chunks, status
    await transaction.rollback()
    chunks, status, _ = await _run_parts(service, request, parts, conn, keep_going, False)
    return chunks, status


async def run(service: DataverseService, request: ApiRequest, db: Executor) -> ApiResponse:
    boundary = boundary_of(request.header("content-type"))
    if boundary is None:
        raise ApiProblem(
            Kind.BAD_REQUEST, "A batch needs Content-Type: multipart/mixed; boundary=..."
        )
    parts = split_parts(request.body, boundary)
    total = sum(
        len(split_parts(p.content, boundary_of(p.headers.get("content-type")) or "-"))
        if p.headers.get("content-type", "").startswith("multipart/mixed")
        else 1
        for p in parts
    )
    if total > MAX_REQUESTS:
        raise ApiProblem(
            Kind.BAD_REQUEST,
            f"The batch contains {total} requests; at most {MAX_REQUESTS} are allowed.",
        )
    keep_going = "odata.continue-on-error" in parse_prefer(request.header("prefer"))
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            chunks, status = await _execute(service, request, parts, conn, keep_going)
    else:
        chunks, status = await _execute(service, request, parts, db, keep_going)
    response_boundary = f"batchresponse_{uuid.uuid4()}"
    composer = Composer(response_boundary)
    for chunk in chunks:
        composer.add(chunk)
    headers = [
        ("content-type", f"multipart/mixed; boundary={response_boundary}"),
        ("odata-version", "4.0"),
    ]
    if keep_going:
        headers.append(("preference-applied", "odata.continue-on-error"))
    return ApiResponse(status, composer.body(), headers)
