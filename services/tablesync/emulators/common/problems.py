"""Refusals as one exception; each side renders it in its own error JSON.

A handler raises ``ApiProblem(kind, message)``; the side's ``ErrorStyle`` picks the
status and the ``error.code`` that API uses for that kind, so the wording of a message
is shared while the codes follow each API's documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from uuid import uuid4

from tablesync.core.events import Side
from tablesync.emulators.common.messages import ApiResponse

__all__ = ["ApiProblem", "ErrorStyle", "Kind"]


class Kind(StrEnum):
    """What went wrong, independent of how a side spells it."""

    BAD_REQUEST = "bad_request"
    """The body or a header is malformed."""
    BAD_QUERY = "bad_query"
    """A query option or the URL does not parse."""
    UNKNOWN_PROPERTY = "unknown_property"
    BAD_VALUE = "bad_value"
    """A value has the wrong type or is out of range."""
    BAD_GUID = "bad_guid"
    BAD_OPTION = "bad_option"
    """A BC enum value outside its options."""
    READ_ONLY = "read_only"
    REQUIRED = "required"
    TOO_LONG = "too_long"
    NOT_FOUND = "not_found"
    """The addressed record does not exist."""
    NO_RESOURCE = "no_resource"
    """The URL names no resource."""
    NO_METADATA = "no_metadata"
    """A table or column definition that does not exist."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ETAG_REQUIRED = "etag_required"
    STALE = "stale"
    """If-Match names an older version."""
    DUPLICATE = "duplicate"
    RELATION = "relation"
    """A reference to another record names one that does not exist."""
    IN_USE = "in_use"
    """The record cannot be deleted: other records refer to it."""
    UNAUTHORIZED = "unauthorized"
    THROTTLED = "throttled"
    """Past the number of requests of the window."""
    THROTTLED_TIME = "throttled_time"
    """Past the combined execution time of the window (Dataverse)."""
    THROTTLED_CONCURRENCY = "throttled_concurrency"
    """Past the requests one user may have in flight (or waiting, on BC)."""
    NOT_SUPPORTED = "not_supported"
    EXPIRED_TOKEN = "expired_token"
    """A delta token the service can no longer serve changes from."""
    NOT_TRACKED = "not_tracked"
    """Changes were asked of a table without change tracking."""
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ApiProblem(Exception):
    """A refusal; ``status`` overrides the side's status for ``kind``."""

    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class ErrorStyle:
    """How one side spells errors: ``{"error": {"code": …, "message": …}}``."""

    side: Side
    codes: Mapping[Kind, str]
    statuses: Mapping[Kind, int]
    correlation_id: bool = False
    """BC ends every message with ``  CorrelationId:  <guid>.``"""

    def status_for(self, kind: Kind) -> int:
        return self.statuses.get(kind, 400)

    def body(self, kind: Kind, message: str) -> dict[str, object]:
        if self.correlation_id:
            message = f"{message}  CorrelationId:  {uuid4()}."
        return {"error": {"code": self.codes.get(kind, ""), "message": message}}

    def response(self, problem: ApiProblem) -> ApiResponse:
        status = problem.status or self.status_for(problem.kind)
        return ApiResponse.json(status, self.body(problem.kind, problem.message), problem.headers)
