"""``multipart/mixed`` bodies of OData batches: parts in, parts out.

Each part of a batch is either an ``application/http`` message (one HTTP request or
response as text) or a nested ``multipart/mixed`` change set. Lines end in CRLF; bare LF
is accepted on input, as lenient servers accept it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "HttpMessage",
    "Part",
    "boundary_of",
    "compose",
    "http_response_part",
    "parse_http_request",
    "split_parts",
]

_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def boundary_of(content_type: str | None) -> str | None:
    match = _BOUNDARY_RE.search(content_type or "")
    return (match[1] or match[2]) if match else None


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers


@dataclass(slots=True)
class Part:
    headers: dict[str, str]
    """MIME headers of the part, lower-case names."""
    content: bytes


def split_parts(body: bytes, boundary: str) -> list[Part]:
    """The parts between ``--boundary`` delimiters up to the closing ``--boundary--``."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    parts = []
    for raw in chunks[1:]:
        if raw.startswith(b"--"):
            break
        chunk = raw.removeprefix(b"\r\n").removeprefix(b"\n")
        match = _HEAD_END.search(chunk)
        if match is None:
            head, content = chunk, b""
        else:
            head, content = chunk[: match.start()], chunk[match.end() :]
        parts.append(Part(_headers(head), content))
    return parts


@dataclass(slots=True)
class HttpMessage:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def parse_http_request(content: bytes) -> HttpMessage:
    """``METHOD target HTTP/1.1`` CRLF headers CRLF CRLF body; ValueError when malformed."""
    text = content.lstrip(b"\r\n")
    line_end = text.find(b"\n")
    request_line = (text if line_end < 0 else text[:line_end]).decode("latin-1").strip()
    words = request_line.split()
    if len(words) < 2:
        raise ValueError(f"not an HTTP request line: {request_line[:80]!r}")
    rest = b"" if line_end < 0 else text[line_end + 1 :]
    match = _HEAD_END.search(b"\r\n" + rest)
    if match is None:
        head, body = rest, b""
    else:
        joined = b"\r\n" + rest
        head, body = joined[: match.start()], joined[match.end() :]
    return HttpMessage(words[0].upper(), words[1], _headers(head), body.rstrip(b"\r\n"))


def http_response_part(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    content_id: str | None = None,
) -> bytes:
    """One ``application/http`` part holding a response."""
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines += ["", f"HTTP/1.1 {status} {reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in headers]
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + body + b"\r\n"


@dataclass(slots=True)
class Composer:
    boundary: str
    chunks: list[bytes] = field(default_factory=list)

    def add(self, part: bytes) -> None:
        self.chunks.append(f"--{self.boundary}\r\n".encode("latin-1") + part)

    def body(self) -> bytes:
        return b"".join(self.chunks) + f"--{self.boundary}--\r\n".encode("latin-1")


def compose(boundary: str, parts: Iterable[bytes]) -> bytes:
    composer = Composer(boundary)
    for part in parts:
        composer.add(part)
    return composer.body()
