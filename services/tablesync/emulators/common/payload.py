"""Request bodies: a JSON object whose properties are checked against the catalog."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson

from tablesync.emulators.common.messages import ApiRequest
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import TableSpec
from tablesync.emulators.common.values import convert

__all__ = ["convert_properties", "json_object"]


def json_object(request: ApiRequest) -> dict[str, object]:
    if not request.body.strip():
        raise ApiProblem(Kind.BAD_REQUEST, "Invalid Request Body: a JSON object is expected.")
    try:
        value = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(
            Kind.BAD_REQUEST, f"Invalid Request Body: the JSON does not parse ({exc})."
        ) from None
    if not isinstance(value, dict):
        raise ApiProblem(Kind.BAD_REQUEST, "Invalid Request Body: a JSON object is expected.")
    return value


def convert_properties(
    spec: TableSpec,
    body: Mapping[str, object],
    *,
    writable_read_only: Collection[str] = (),
) -> dict[str, object]:
    """The body's properties as SQL values, by name; annotations (``@…``) are ignored.

    ``writable_read_only`` names read-only fields this request may still carry (a
    Dataverse create may give its own primary key).
    """
    fields = spec.entity.fields
    values: dict[str, object] = {}
    for name, raw in body.items():
        if name.startswith("@"):
            continue
        field = fields.get(name)
        if field is None:
            raise ApiProblem(
                Kind.UNKNOWN_PROPERTY,
                f"The property '{name}' does not exist on type '{spec.type_name}'. Make sure "
                "to only use property names that are defined by the type.",
            )
        if field.read_only and name not in writable_read_only:
            raise ApiProblem(Kind.READ_ONLY, f"Control '{name}' is read-only.")
        values[name] = convert(field, raw)
    return values
