"""JSON values of a request body checked against the catalog and turned into SQL values.

Messages follow the wording of the OData library both APIs are built on, and always
name the property and what was wrong with it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from uuid import UUID

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.problems import ApiProblem, Kind

__all__ = ["convert", "parse_datetime", "parse_guid", "type_mismatch"]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
# numeric columns are unbounded; this keeps values within what both APIs' decimals hold.
_MAX_DECIMAL = Decimal("1e28")
_GUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_mismatch(field: FieldDef, value: object) -> ApiProblem:
    return ApiProblem(
        Kind.BAD_VALUE,
        f"Cannot convert the literal '{_shown(value)}' to the expected type "
        f"'{field.edm_type}' of the property '{field.name}'.",
    )


def parse_guid(text: str, what: str) -> UUID:
    """A GUID in the 8-4-4-4-12 form both APIs use (braces allowed, as BC allows)."""
    stripped = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    if not _GUID_RE.fullmatch(stripped):
        raise ApiProblem(
            Kind.BAD_GUID,
            f"Invalid GUID '{_shown(text)}' for {what}: the format of a GUID is "
            "CDEF7890-ABCD-0123-1234-567890ABCDEF where 0-9, A-F are hexadecimal digits.",
        )
    return UUID(stripped)


def parse_datetime(text: str) -> datetime | None:
    """An ISO 8601 instant with an offset (``Z`` or ±hh:mm), or None."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def _string(field: FieldDef, value: object) -> str:
    if not isinstance(value, str):
        raise type_mismatch(field, value)
    if "\x00" in value:
        raise ApiProblem(Kind.BAD_VALUE, f"The value of '{field.name}' contains a NUL character.")
    if field.max_length is not None and len(value) > field.max_length:
        raise ApiProblem(
            Kind.TOO_LONG,
            f"The length of the string is {len(value)}, but it must be less than or equal to "
            f"{field.max_length} characters. Property: '{field.name}'. Value: {_shown(value)}",
        )
    if field.options and value not in field.options:
        options = ",".join(field.options)
        raise ApiProblem(
            Kind.BAD_OPTION,
            f"'{_shown(value)}' is not an option of '{field.name}'. "
            f"The existing options are: {options}",
        )
    return value


def _integer(field: FieldDef, value: object, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_mismatch(field, value)
    if not bounds[0] <= value <= bounds[1]:
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"The value {value} of '{field.name}' is out of the range of {field.edm_type}.",
        )
    if field.options and str(value) not in field.options:
        # A Dataverse choice column: its options' values, in Dataverse's wording.
        raise ApiProblem(
            Kind.BAD_OPTION,
            f"A validation error occurred. The value {value} of '{field.name}' is outside the "
            f"valid range. Accepted Values: {','.join(field.options)}",
        )
    return value


def _decimal(field: FieldDef, value: object) -> Decimal:
    if isinstance(value, bool):
        raise type_mismatch(field, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise type_mismatch(field, value)
        # repr is the shortest text that round-trips: what the JSON said.
        number = Decimal(repr(value))
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        # IEEE754Compatible clients send decimals as strings.
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise type_mismatch(field, value) from None
        if not number.is_finite():
            raise type_mismatch(field, value)
    else:
        raise type_mismatch(field, value)
    if abs(number) >= _MAX_DECIMAL:
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"The value {value} of '{field.name}' is out of the range of Edm.Decimal.",
        )
    return number


def convert(field: FieldDef, value: object) -> object:
    """``value`` from a JSON body as the SQL value of ``field``; ApiProblem when it is not one."""
    if value is None:
        if not field.nullable:
            raise ApiProblem(
                Kind.BAD_VALUE,
                f"A null value was found for the property named '{field.name}', which has the "
                f"expected type '{field.edm_type}[Nullable=False]'. The expected type "
                f"'{field.edm_type}[Nullable=False]' does not allow null values.",
            )
        return None
    kind = field.edm_type
    if kind == "Edm.String":
        return _string(field, value)
    if kind == "Edm.Guid":
        if not isinstance(value, str):
            raise type_mismatch(field, value)
        return parse_guid(value, f"the property '{field.name}'")
    if kind == "Edm.Int32":
        return _integer(field, value, _INT32)
    if kind == "Edm.Int64":
        return _integer(field, value, _INT64)
    if kind == "Edm.Decimal":
        return _decimal(field, value)
    if kind == "Edm.Boolean":
        if not isinstance(value, bool):
            raise type_mismatch(field, value)
        return value
    if kind == "Edm.DateTimeOffset":
        moment = parse_datetime(value) if isinstance(value, str) else None
        if moment is None:
            raise type_mismatch(field, value)
        return moment
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise type_mismatch(field, value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise type_mismatch(field, value) from None
