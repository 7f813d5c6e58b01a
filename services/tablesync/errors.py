"""Every error tablesync raises on purpose derives from one root.

TablesyncError
├── ConfigError               a setting or file is wrong; names which
│   └── MappingError          a mapping, field or filter is invalid
│       └── FilterSyntaxError a filter expression does not parse (names the position)
├── InfraError                the local Kafka or PostgreSQL could not be managed
├── EventError
│   ├── DecodeError           bytes are not an event this build can read
│   └── InvalidEvent          a decodable event is not valid where it was found
├── ApiError                  a Business Central or Dataverse request failed
│   ├── ApiAuthError          credentials refused
│   ├── RecordRejected        the API refused one record (4xx); the batch goes on
│   └── ApiUnavailable        retries exhausted on 429 / 5xx / connection errors
└── CommandRefused            an operator command cannot run now (names why)
"""

from __future__ import annotations

__all__ = [
    "ApiAuthError",
    "ApiError",
    "ApiUnavailable",
    "CommandRefused",
    "ConfigError",
    "DecodeError",
    "EventError",
    "FilterSyntaxError",
    "InfraError",
    "InvalidEvent",
    "MappingError",
    "RecordRejected",
    "TablesyncError",
]


class TablesyncError(Exception):
    """Root of every error tablesync raises on purpose."""


class ConfigError(TablesyncError):
    """A setting or configuration file is wrong."""


class MappingError(ConfigError):
    """A table mapping, field mapping or filter is invalid.

    The message names the mapping and field; ``mapping`` and ``field`` keep them
    for callers that render errors themselves.
    """

    def __init__(
        self,
        message: str,
        *,
        mapping: str | None = None,
        field: str | None = None,
        path: tuple[str | int, ...] = (),
    ) -> None:
        where = ".".join(p for p in (mapping, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.mapping = mapping
        self.field = field
        self.reason = message
        # Where in the source document the problem is, for loaders that can
        # turn it into a line number.
        self.path = path


class FilterSyntaxError(MappingError):
    """A filter expression does not parse; ``position`` is the 0-based offset."""

    def __init__(self, message: str, *, expression: str, position: int) -> None:
        pointer = f"{expression}\n{' ' * position}^"
        super().__init__(f"{message} at position {position}\n{pointer}")
        self.expression = expression
        self.position = position
        self.reason = message


class InfraError(TablesyncError):
    """The local Kafka or PostgreSQL server could not be installed, started or reached."""


class EventError(TablesyncError):
    """An event could not be read or used."""


class DecodeError(EventError):
    """Bytes that are not an event this build can read: wrong header, unknown
    schema fingerprint, truncated or corrupt body, or a required field missing."""


class InvalidEvent(EventError):
    """A poison event: it goes to the dead-letter topic and its offset counts as processed."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason


class ApiError(TablesyncError):
    """A request to Business Central or Dataverse failed."""

    def __init__(self, message: str, *, side: str, status: int | None = None) -> None:
        super().__init__(f"{side}: {message}")
        self.side = side
        self.status = status


class ApiAuthError(ApiError):
    """The API refused the credentials (401/403) or the token endpoint failed."""


class RecordRejected(ApiError):
    """The API refused one record (a 4xx other than 401/403/408/429)."""

    def __init__(self, message: str, *, side: str, status: int, record_id: str | None) -> None:
        super().__init__(message, side=side, status=status)
        self.record_id = record_id
        self.detail = message


class ApiUnavailable(ApiError):
    """429 / 5xx / connection errors outlasted the retry budget."""


class CommandRefused(TablesyncError):
    """An operator command cannot run now, e.g. a full synchronization is already running."""
