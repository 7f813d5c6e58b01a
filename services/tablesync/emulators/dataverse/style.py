"""How Dataverse spells errors: ``{"error": {"code": "0x8004…", "message": …}}``.

Statuses follow "Compose HTTP requests and handle errors" (``ConcurrencyVersionMismatch``
and ``DuplicateRecord`` are 412, ``CannotDeleteDueToAssociation`` 405) and "Perform
conditional operations" (``ObjectDoesNotExist`` is 404, including a lookup bound to a
record that does not exist). The 429 messages and codes are the documented
service-protection ones ("Service protection API limits": number of requests
0x80072322, execution time 0x80072321, concurrent requests 0x80072326).
Change tracking's refusals are the "Web service error codes" ``ExpiredVersionStamp``
(0x80044352) and ``ChangeTrackingNotEnabledForEntity`` (0x80072491), both 400. A table
definition that does not exist is 404 with 0x80041102 ("The entity with a name = '…' with
namemapping = 'Logical' was not found in the MetadataCache.").
"""

from __future__ import annotations

from types import MappingProxyType

from tablesync.emulators.common.problems import ErrorStyle, Kind

__all__ = ["DATAVERSE_STYLE"]

_PAYLOAD = "0x80048d19"
_QUERY = "0x80060888"

DATAVERSE_STYLE = ErrorStyle(
    side="dataverse",
    codes=MappingProxyType(
        {
            Kind.BAD_REQUEST: _PAYLOAD,
            Kind.BAD_QUERY: _QUERY,
            Kind.UNKNOWN_PROPERTY: _PAYLOAD,
            Kind.BAD_VALUE: _PAYLOAD,
            Kind.BAD_GUID: _QUERY,
            Kind.BAD_OPTION: _PAYLOAD,
            Kind.READ_ONLY: _PAYLOAD,
            Kind.REQUIRED: "0x80040203",
            Kind.TOO_LONG: "0x80044331",
            Kind.NOT_FOUND: "0x80040217",
            Kind.NO_RESOURCE: _QUERY,
            Kind.NO_METADATA: "0x80041102",
            Kind.METHOD_NOT_ALLOWED: _QUERY,
            Kind.ETAG_REQUIRED: "0x80060882",
            Kind.STALE: "0x80060882",
            Kind.DUPLICATE: "0x80040237",
            Kind.RELATION: "0x80040217",
            Kind.IN_USE: "0x80040227",
            Kind.UNAUTHORIZED: "",
            Kind.THROTTLED: "0x80072322",
            Kind.THROTTLED_TIME: "0x80072321",
            Kind.THROTTLED_CONCURRENCY: "0x80072326",
            Kind.NOT_SUPPORTED: "0x80060888",
            Kind.EXPIRED_TOKEN: "0x80044352",
            Kind.NOT_TRACKED: "0x80072491",
            Kind.UNAVAILABLE: "0x80040216",
            Kind.INTERNAL: "0x80040216",
        }
    ),
    statuses=MappingProxyType(
        {
            Kind.NOT_FOUND: 404,
            Kind.NO_RESOURCE: 404,
            Kind.NO_METADATA: 404,
            Kind.RELATION: 404,
            Kind.METHOD_NOT_ALLOWED: 405,
            Kind.IN_USE: 405,
            Kind.STALE: 412,
            Kind.DUPLICATE: 412,
            Kind.UNAUTHORIZED: 401,
            Kind.THROTTLED: 429,
            Kind.THROTTLED_TIME: 429,
            Kind.THROTTLED_CONCURRENCY: 429,
            Kind.NOT_SUPPORTED: 501,
            Kind.UNAVAILABLE: 503,
            Kind.INTERNAL: 500,
        }
    ),
)
