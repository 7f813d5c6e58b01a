"""Every error tablesync raises on purpose derives from one root.

TablesyncError
├── ConfigError               a setting or file is wrong; names which
│   ├── MappingError          a mapping, field or filter is invalid
│   │   └── FilterSyntaxError a filter expression does not parse (names the position)
│   └── KafkaAuthError        the brokers refused tablesync's credentials or certificate
├── InfraError                the local Kafka or PostgreSQL could not be managed
├── LeaseLost                 a singleton's lease ended under its work (names the service)
├── MessageTooLarge           a message is over the log's size limit (names topic, key, sizes)
├── Fenced                    another apply instance took this one's partitions
│   └── ClaimLost             the claim on a batch's records was lost before its commit
├── ClaimsBusy                another apply instance held a batch's records too long
├── GaveWay                   a batch waiting for claimed records let a rebalance go first
├── EventError
│   ├── DecodeError           bytes are not an event this build can read
│   └── InvalidEvent          a decodable event is not valid where it was found
├── ApiError                  a Business Central or Dataverse request failed
│   ├── ApiAuthError          credentials refused
│   │   ├── TokenRefused      the token endpoint refused: Entra's error, description, AADSTS code
│   │   └── ReadUnauthorized  … for a read (also a ReadRefused: names the entity set)
│   ├── RecordRejected        the API refused one record (4xx); the batch goes on
│   ├── ReadRefused           the API refused a read (a 4xx of the query)
│   ├── ApiUnavailable        retries exhausted on 429 / 5xx / connection errors
│   ├── ChangeTrackingUnavailable  a table has no change tracking (BC: none has)
│   └── DeltaLinkExpired      the side no longer serves changes from a delta link
├── CommandRefused            an operator command cannot run now (names why)
│   ├── AlreadyRunning        a full synchronization is running (names its run)
│   └── AlreadyCoupled        a record is coupled to another one (names both)
├── InvalidRequest            an operator's request is malformed (names the argument)
└── NotFound                  something an operator named does not exist (names it)
    ├── UnknownMapping        no mapping of that name (names the known ones)
    ├── RecordNotFound        a side has no record with that id (names side, table, id)
    └── NotCoupled            a record has no coupling (names mapping, side, id)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlreadyCoupled",
    "AlreadyRunning",
    "ApiAuthError",
    "ApiError",
    "ApiUnavailable",
    "ChangeTrackingUnavailable",
    "ClaimLost",
    "ClaimsBusy",
    "CommandRefused",
    "ConfigError",
    "DecodeError",
    "DeltaLinkExpired",
    "EventError",
    "FilterSyntaxError",
    "GaveWay",
    "InfraError",
    "InvalidEvent",
    "InvalidRequest",
    "KafkaAuthError",
    "LeaseLost",
    "MappingError",
    "MessageTooLarge",
    "NotCoupled",
    "NotFound",
    "ReadRefused",
    "ReadUnauthorized",
    "RecordNotFound",
    "RecordRejected",
    "TablesyncError",
    "TokenRefused",
    "UnknownMapping",
]


class TablesyncError(Exception):
    """Root of every error tablesync raises on purpose."""


class Fenced(TablesyncError):
    """Another apply instance took partitions this one still worked on: its
    batch is dropped, neither written further nor committed."""

    def __init__(self, mapping: str, partitions: list[tuple[str, int]]) -> None:
        self.mapping = mapping
        self.partitions = partitions
        named = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"{mapping}: partitions {named} are another instance's now")


class ClaimLost(Fenced):
    """The claim on a batch's records ended before its commit (its connection
    was cut): another instance may have decided them since, so the batch is
    dropped and read again, as a fenced one is."""

    def __init__(self, mapping: str, partitions: list[tuple[str, int]]) -> None:
        super().__init__(mapping, partitions)
        self.args = (f"{mapping}: the claim on the batch's records was lost before its commit",)


class GaveWay(TablesyncError):
    """A batch was still waiting for records another apply instance holds
    when its own partitions were being revoked: it is dropped, neither
    written further nor committed, so the rebalance goes on (the holder may
    be frozen, and the rebalance is what moves its partitions away)."""

    def __init__(self, mapping: str, records: int) -> None:
        self.mapping = mapping
        self.records = records
        super().__init__(
            f"{mapping}: a batch of {records} records waiting for another instance's "
            "records gave way to a rebalance"
        )


class ClaimsBusy(TablesyncError):
    """Another apply instance held records of a batch for longer than the wait:
    nothing was claimed, and the batch is tried again after a pause."""

    def __init__(self, mapping: str, records: int, waited_s: float) -> None:
        self.mapping = mapping
        self.records = records
        self.waited_s = waited_s
        super().__init__(
            f"{mapping}: {records} records of the batch held by another instance "
            f"for more than {waited_s:g} s"
        )


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


class KafkaAuthError(ConfigError):
    """The Kafka brokers refused tablesync's credentials or certificate, or tablesync
    refused theirs. Not retried: it names the ``TABLESYNC_KAFKA__*`` settings to fix."""


class InfraError(TablesyncError):
    """The local Kafka or PostgreSQL server could not be installed, started or reached."""


class LeaseLost(TablesyncError):
    """A singleton's work met a side effect after its lease ended: another
    process may hold it now, so the work stops before the effect."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service}: the lease is no longer held by this process")
        self.service = service


class MessageTooLarge(TablesyncError):
    """The log refused a message over its size limit; none of the call's
    messages was appended. Never worth retrying: the same bytes are refused
    again."""

    def __init__(self, topic: str, key: bytes | None, size: int, limit: int) -> None:
        super().__init__(
            f"{topic}: a message of {size} bytes (key {key!r}) is over the log's limit "
            f"of {limit} bytes"
        )
        self.topic = topic
        self.key = key
        self.size = size
        self.limit = limit


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


class TokenRefused(ApiAuthError):
    """The token endpoint refused a token request. ``error`` and ``description`` are
    the OAuth 2.0 ``error`` and ``error_description`` (RFC 6749 5.2); ``code`` the
    Microsoft Entra ``AADSTS<n>`` code in it; ``trace_id`` and ``correlation_id``
    what Microsoft support asks for."""

    def __init__(
        self,
        message: str,
        *,
        side: str,
        status: int | None,
        error: str,
        description: str,
        code: str | None,
        trace_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, side=side, status=status)
        self.error = error
        self.description = description
        self.code = code
        self.trace_id = trace_id
        self.correlation_id = correlation_id


class RecordRejected(ApiError):
    """The API refused one record (a 4xx other than 401/403/408/429)."""

    def __init__(self, message: str, *, side: str, status: int, record_id: str | None) -> None:
        super().__init__(message, side=side, status=status)
        self.record_id = record_id
        self.detail = message


class ReadRefused(ApiError):
    """The API refused a read: the query (a 4xx: too long, a property the side
    does not know, a value it cannot read) or, as ``ReadUnauthorized``, the
    credentials or a permission.

    A refused query may be served narrower (fewer records): apply narrows it
    down to the records the side refuses, which become record errors.
    ``reason`` is the side's answer without the side's name."""

    def __init__(self, message: str, *, side: str, status: int | None, entity_set: str) -> None:
        super().__init__(message, side=side, status=status)
        self.entity_set = entity_set
        self.reason = message

    @property
    def credentials(self) -> bool:
        """Whether every read of the side would be refused alike."""
        return isinstance(self, ApiAuthError)


class ReadUnauthorized(ReadRefused, ApiAuthError):
    """A read refused for the credentials or a permission (401/403, or no token
    to be had): the services wait it out like an outage until an operator
    fixes it."""


class ApiUnavailable(ApiError):
    """429 / 5xx / connection errors outlasted the retry budget."""


class ChangeTrackingUnavailable(ApiError):
    """The table does not track changes (Dataverse ``ChangeTrackingEnabled`` false, or BC):
    its changes are found by their modified-on stamps instead."""


class DeltaLinkExpired(ApiError):
    """The side no longer serves changes from this delta link (Dataverse
    ``ExpiredVersionStamp``: older than the organization's change tracking retention, or
    not one of its own): the table is read again without one, for a new link."""


class CommandRefused(TablesyncError):
    """An operator command cannot run now, e.g. a full synchronization is already running."""


class AlreadyRunning(CommandRefused):
    """A second full synchronization while one is requested or running."""

    def __init__(self, run_id: str | None) -> None:
        super().__init__(f"a full synchronization is already running (run {run_id})")
        self.run_id = run_id


class AlreadyCoupled(CommandRefused):
    """A record to couple is coupled to another record of the mapping already."""

    def __init__(
        self, mapping: str, side: str, record_id: str, other_side: str, other_id: str
    ) -> None:
        super().__init__(
            f"{mapping}: {side} record {record_id} is already coupled to "
            f"{other_side} record {other_id}; uncouple it first"
        )
        self.mapping = mapping
        self.side = side
        self.record_id = record_id
        self.other_id = other_id


class InvalidRequest(TablesyncError):
    """An operator's request is malformed: an id that is not a GUID, nothing to
    change, no records selected. The message names the argument."""


class NotFound(TablesyncError):
    """Something an operator named does not exist; ``what`` says what kind of
    thing (``mapping``, ``record``, ``coupling``, ``run``, ``job``)."""

    def __init__(self, message: str, *, what: str) -> None:
        super().__init__(message)
        self.what = what


class UnknownMapping(NotFound):
    """No mapping of that name is loaded; the message lists the known ones."""

    def __init__(self, names: Sequence[str], known: Sequence[str]) -> None:
        listed = ", ".join(repr(n) for n in names)
        noun = "mapping" if len(names) == 1 else "mappings"
        super().__init__(
            f"unknown {noun} {listed} (known: {', '.join(known) or 'none'})", what="mapping"
        )
        self.names = tuple(names)


class RecordNotFound(NotFound):
    """A side has no record with the id an operator gave."""

    def __init__(self, side: str, table: str, record_id: str) -> None:
        super().__init__(f"{side} has no {table} record {record_id}", what="record")
        self.side = side
        self.table = table
        self.record_id = record_id


class NotCoupled(NotFound):
    """The record an operator named has no coupling in the mapping."""

    def __init__(self, mapping: str, side: str, record_id: str) -> None:
        super().__init__(f"{mapping}: {side} record {record_id} is not coupled", what="coupling")
        self.mapping = mapping
        self.side = side
        self.record_id = record_id
