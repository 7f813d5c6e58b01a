"""How BC spells errors and names its tables, from "Troubleshooting OData/API calls"
(``dev-itpro/webservices/dynamics-error-codes.md``) and the HTTP status table it includes.

A stale ``If-Match`` is ``409 Conflict`` with ``Request_EntityChanged`` ("Another user has
already changed the record."), not 412: BC's table lists 409 for edit conflicts.
"""

from __future__ import annotations

from types import MappingProxyType

from tablesync.core.catalog import Entity
from tablesync.emulators.common.problems import ErrorStyle, Kind

__all__ = ["BC_STYLE", "TABLE_CAPTIONS", "caption_of"]

BC_STYLE = ErrorStyle(
    side="bc",
    codes=MappingProxyType(
        {
            Kind.BAD_REQUEST: "BadRequest",
            Kind.BAD_QUERY: "BadRequest_NotFound",
            Kind.UNKNOWN_PROPERTY: "BadRequest",
            Kind.BAD_VALUE: "BadRequest",
            Kind.BAD_GUID: "Application_InvalidGUID",
            Kind.BAD_OPTION: "Application_EvaluateException",
            Kind.READ_ONLY: "BadRequest_InvalidOperation",
            Kind.REQUIRED: "BadRequest_RequiredParamNotProvided",
            Kind.TOO_LONG: "Application_StringExceededLength",
            Kind.NOT_FOUND: "Internal_RecordNotFound",
            Kind.NO_RESOURCE: "BadRequest_ResourceNotFound",
            Kind.METHOD_NOT_ALLOWED: "BadRequest_MethodNotAllowed",
            Kind.ETAG_REQUIRED: "BadRequest_InvalidToken",
            Kind.STALE: "Request_EntityChanged",
            Kind.DUPLICATE: "Internal_EntityWithSameKeyExists",
            Kind.RELATION: "Internal_InvalidTableRelation",
            Kind.UNAUTHORIZED: "Authentication_InvalidCredentials",
            Kind.THROTTLED: "Application_TooManyRequests",
            Kind.THROTTLED_TIME: "Application_TooManyRequests",
            Kind.THROTTLED_CONCURRENCY: "Application_TooManyRequests",
            Kind.NOT_SUPPORTED: "BadRequest_MethodNotImplemented",
            Kind.UNAVAILABLE: "Internal_ServiceUnavailable",
            Kind.INTERNAL: "Internal_ServerError",
        }
    ),
    statuses=MappingProxyType(
        {
            Kind.NOT_FOUND: 404,
            Kind.NO_RESOURCE: 404,
            Kind.METHOD_NOT_ALLOWED: 405,
            Kind.STALE: 409,
            Kind.UNAUTHORIZED: 401,
            Kind.THROTTLED: 429,
            Kind.THROTTLED_TIME: 429,
            Kind.THROTTLED_CONCURRENCY: 429,
            Kind.NOT_SUPPORTED: 501,
            Kind.UNAVAILABLE: 503,
            Kind.INTERNAL: 500,
        }
    ),
    correlation_id=True,
)

TABLE_CAPTIONS: dict[str, tuple[str, str]] = {
    "customers": ("Customer", "No."),
    "vendors": ("Vendor", "No."),
    "contacts": ("Contact", "No."),
    "currencies": ("Currency", "Code"),
    "salespeople": ("Salesperson/Purchaser", "Code"),
    "items": ("Item", "No."),
    "unitsOfMeasure": ("Unit of Measure", "Code"),
    "paymentTerms": ("Payment Terms", "Code"),
    "shipmentMethods": ("Shipment Method", "Code"),
}
"""Entity set → (table caption, caption of the field that must be unique)."""


def caption_of(entity: Entity) -> tuple[str, str]:
    """(table caption, unique field caption); a custom page's table is captioned by its
    entity name, as AL names a table without a ``Caption``."""
    known = TABLE_CAPTIONS.get(entity.entity_set)
    if known is not None:
        return known
    return entity.logical_name[:1].upper() + entity.logical_name[1:], "Code"
