"""OData $batch bodies: multipart/mixed (OData 4.0 section 11.7, as Dataverse takes it)
and JSON (OData 4.01, as Business Central takes it).

Multipart: every write goes in a change set of its own, so a refused record rolls back
only itself; the batch is sent with ``Prefer: odata.continue-on-error`` so the server
goes on after a failure. The response has one top-level part per change set, in
request order: a nested multipart for a change set that succeeded, a single
``application/http`` part carrying the error for one that failed. Reads (``GET``) may
not be in a change set: ``encode_requests`` puts each in a top-level part of its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "BatchFormatError",
    "BatchRequest",
    "BatchResponse",
    "decode_json_batch",
    "decode_multipart",
    "encode_changesets",
    "encode_json_batch",
    "encode_requests",
]

_CRLF = b"\r\n"
_BOUNDARY_RE = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)
_STATUS_RE = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")


class BatchFormatError(ValueError):
    """A $batch response that does not have the shape of one (cut short, wrong type)."""


@dataclass(frozen=True, slots=True)
class BatchRequest:
    method: str
    url: str
    """Multipart: absolute path (``/api/data/v9.2/accounts``); JSON: relative to the
    service root of the $batch endpoint."""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    """A JSON-able value, or None for no body."""


@dataclass(frozen=True, slots=True)
class BatchResponse:
    status: int
    headers: Mapping[str, str]
    """Names lower-cased."""
    data: Any
    """The parsed JSON body, or None."""
    raw: bytes = b""
    """The body when it was not JSON, for error messages."""
    content_id: str | None = None


def _parse_body(body: bytes) -> tuple[Any, bytes]:
    text = body.strip()
    if not text:
        return None, b""
    try:
        return orjson.loads(text), b""
    except orjson.JSONDecodeError:
        return None, text


# ---------------------------------------------------------------- multipart


def encode_changesets(
    requests: Sequence[BatchRequest], *, boundary: str | None = None
) -> tuple[str, bytes]:
    """A multipart $batch body with one change set per request.

    Returns (Content-Type header value, body). Content-IDs are 1-based request indexes."""
    batch = boundary or f"batch_{uuid.uuid4().hex}"
    out: list[bytes] = []
    for index, request in enumerate(requests, start=1):
        changeset = f"changeset_{uuid.uuid4().hex}"
        out += [
            b"--",
            batch.encode(),
            _CRLF,
            b"Content-Type: multipart/mixed; boundary=",
            changeset.encode(),
            _CRLF,
            _CRLF,
            b"--",
            changeset.encode(),
            _CRLF,
            *_http_part(request, index),
        ]
        out += [_CRLF, b"--", changeset.encode(), b"--", _CRLF]
    out += [b"--", batch.encode(), b"--", _CRLF]
    return f"multipart/mixed; boundary={batch}", b"".join(out)


def _http_part(request: BatchRequest, content_id: int | None) -> list[bytes]:
    """One ``application/http`` part: its headers, the request line, headers and body."""
    out = [b"Content-Type: application/http", _CRLF, b"Content-Transfer-Encoding: binary", _CRLF]
    if content_id is not None:
        out += [b"Content-ID: ", str(content_id).encode(), _CRLF]
    out += [_CRLF, f"{request.method} {request.url} HTTP/1.1".encode(), _CRLF]
    for name, value in request.headers.items():
        out += [f"{name}: {value}".encode(), _CRLF]
    if request.body is not None:
        out += [b"Content-Type: application/json; type=entry", _CRLF, _CRLF]
        out.append(orjson.dumps(request.body))
    else:
        out.append(_CRLF)
    return out


def encode_requests(
    requests: Sequence[BatchRequest], *, boundary: str | None = None
) -> tuple[str, bytes]:
    """A multipart $batch body with each request in a top-level part (no change sets):
    the form of reads. Returns (Content-Type header value, body)."""
    batch = boundary or f"batch_{uuid.uuid4().hex}"
    out: list[bytes] = []
    for request in requests:
        out += [b"--", batch.encode(), _CRLF, *_http_part(request, None), _CRLF]
    out += [b"--", batch.encode(), b"--", _CRLF]
    return f"multipart/mixed; boundary={batch}", b"".join(out)


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY_RE.search(content_type)
    if match is None or "multipart/" not in content_type.lower():
        raise BatchFormatError(f"not a multipart body: {content_type[:100]!r}")
    return match.group(1)


def decode_multipart(content_type: str, body: bytes) -> list[list[BatchResponse]]:
    """The responses of a multipart $batch, one list per top-level part in order: the
    responses of a change set, or the single response of a request or failed change set."""
    parts: list[list[BatchResponse]] = []
    for headers, content in _split(body, boundary_of(content_type).encode()):
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/"):
            inner = [
                _response(inner_headers, inner_content)
                for inner_headers, inner_content in _split(content, boundary_of(part_type).encode())
            ]
            parts.append(inner)
        else:
            parts.append([_response(headers, content)])
    return parts


def _split(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, content) of each part between ``--boundary`` lines."""
    delimiter = b"--" + boundary
    position = body.find(delimiter)
    if position < 0:
        raise BatchFormatError("multipart boundary not found")
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return parts
        line_end = body.find(b"\n", position)
        if line_end < 0:
            raise BatchFormatError("multipart body cut short")
        start = line_end + 1
        # The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
        following = body.find(b"\n" + delimiter, start)
        if following < 0:
            raise BatchFormatError("multipart body cut short: closing boundary missing")
        end = following - 1 if following > start and body[following - 1] == 0x0D else following
        parts.append(_headers_and_content(body[start:end]))
        position = following + 1


def _headers_and_content(part: bytes) -> tuple[dict[str, str], bytes]:
    head, content = _cut_head(part)
    headers: dict[str, str] = {}
    for line in head.splitlines():
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers, content


def _cut_head(part: bytes) -> tuple[bytes, bytes]:
    crlf = part.find(b"\r\n\r\n")
    lf = part.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return part[:crlf], part[crlf + 4 :]
    if lf >= 0:
        return part[:lf], part[lf + 2 :]
    return part, b""


def _response(part_headers: dict[str, str], content: bytes) -> BatchResponse:
    message = content.lstrip(b"\r\n")
    match = _STATUS_RE.match(message)
    if match is None:
        raise BatchFormatError(f"batch part is not an HTTP response: {message[:40]!r}")
    status_end = message.find(b"\n")
    rest = message[status_end + 1 :] if status_end >= 0 else b""
    if rest.startswith((b"\r\n", b"\n")):
        head, body = b"", rest.lstrip(b"\r\n")
    else:
        head, body = _cut_head(rest)
    headers, _ = _headers_and_content(head + b"\r\n\r\n")
    data, raw = _parse_body(body)
    return BatchResponse(int(match.group(1)), headers, data, raw, part_headers.get("content-id"))


# ---------------------------------------------------------------- JSON


def encode_json_batch(requests: Sequence[BatchRequest]) -> bytes:
    """A JSON $batch body; request ids are 0-based indexes as strings."""
    return orjson.dumps(
        {
            "requests": [
                {
                    "id": str(index),
                    "method": request.method,
                    "url": request.url,
                    "headers": dict(request.headers),
                    **({"body": request.body} if request.body is not None else {}),
                }
                for index, request in enumerate(requests)
            ]
        }
    )


def decode_json_batch(data: Any, count: int) -> list[BatchResponse]:
    """The responses of a JSON $batch in request order (servers may answer out of order;
    requests are matched by id, falling back to position when ids are missing)."""
    responses = data.get("responses") if isinstance(data, dict) else None
    if not isinstance(responses, list):
        raise BatchFormatError("JSON batch response without a 'responses' array")
    by_index: dict[int, BatchResponse] = {}
    for position, item in enumerate(responses):
        if not isinstance(item, dict) or not isinstance(item.get("status"), int):
            raise BatchFormatError("JSON batch response item without a status")
        raw_id = item.get("id")
        index = int(raw_id) if isinstance(raw_id, str) and raw_id.isdigit() else position
        headers = item.get("headers")
        by_index[index] = BatchResponse(
            item["status"],
            {str(k).lower(): str(v) for k, v in headers.items()}
            if isinstance(headers, dict)
            else {},
            item.get("body"),
            b"",
            str(raw_id) if raw_id is not None else None,
        )
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise BatchFormatError(f"JSON batch response lacks {len(missing)} of {count} requests")
    return [by_index[i] for i in range(count)]
