"""Weak ETags from row versions, and ``If-Match`` / ``If-None-Match`` parsing.

Dataverse's ETag is ``W/"<versionnumber>"``. BC's is opaque: base64 of
``'<digits>;<version>;00;'``, the shape real BC ETags decode to. Both change on every
write because every write takes a new value of one global sequence.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

__all__ = ["Precondition", "bc_etag", "dataverse_etag", "parse_precondition"]


def dataverse_etag(version: int) -> str:
    return f'W/"{version}"'


def bc_etag(version: int) -> str:
    digits = str(version)
    opaque = base64.b64encode(f"'{len(digits)};{digits};00;'".encode()).decode()
    return f'W/"{opaque}"'


def _bare(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')


@dataclass(frozen=True, slots=True)
class Precondition:
    """An ``If-Match`` or ``If-None-Match`` header: ``*`` or a set of tags."""

    any: bool
    tags: frozenset[str]

    def matches(self, etag: str) -> bool:
        return self.any or _bare(etag) in self.tags


def parse_precondition(header: str | None) -> Precondition | None:
    """None when the header is absent or ``null`` (what Dataverse clients send by habit)."""
    if header is None:
        return None
    text = header.strip()
    if not text or text == "null":
        return None
    if text == "*":
        return Precondition(any=True, tags=frozenset())
    return Precondition(any=False, tags=frozenset(_bare(t) for t in text.split(",") if t.strip()))
