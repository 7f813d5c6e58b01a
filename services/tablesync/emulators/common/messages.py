"""Requests and responses as plain values, so one handler serves HTTP and ``$batch`` parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from urllib.parse import parse_qsl

import orjson

__all__ = [
    "JSON_CONTENT_TYPE",
    "ApiRequest",
    "ApiResponse",
    "dumps",
    "parse_query",
]

JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal"


def _default(value: object) -> object:
    # Rows come out of SQL already formatted; these cover values built in Python.
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_default)


def parse_query(raw: str) -> dict[str, str]:
    """Query options by name; the last one wins when a name repeats."""
    return dict(parse_qsl(raw, keep_blank_values=True))


@dataclass(slots=True)
class ApiRequest:
    """One request to a service root, from HTTP or from a ``$batch`` part.

    ``path`` is percent-decoded and relative to the service root, without a leading
    slash (``accounts(…)``, ``companies(…)/customers``); ``headers`` has lower-case names.
    """

    method: str
    path: str
    query: Mapping[str, str]
    raw_query: str
    headers: Mapping[str, str]
    body: bytes
    service_root: str
    """The absolute URL of the service root, e.g. ``http://127.0.0.1:7049/api/data/v9.2``."""
    root: str
    """The service root's path, e.g. ``/api/data/v9.2``."""
    references: Mapping[str, str] = field(default_factory=dict)
    """In a change set: Content-ID → the path of the row that request created."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> ApiResponse:
        pairs = [("content-type", JSON_CONTENT_TYPE), ("odata-version", "4.0")]
        if headers:
            pairs.extend(headers.items())
        return cls(status, dumps(payload), pairs)

    @classmethod
    def empty(cls, status: int, headers: Mapping[str, str] | None = None) -> ApiResponse:
        pairs = [("odata-version", "4.0")]
        if headers:
            pairs.extend(headers.items())
        return cls(status, b"", pairs)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)
