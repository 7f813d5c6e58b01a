"""The admin API's OpenAPI 3.1 document, generated from ``ENDPOINTS``: the same
pydantic models that parse requests and shape responses give the schemas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from tablesync.admin.routes import Endpoint
from tablesync.admin.schemas import ErrorOut

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
# (model, mode) -> {"$ref": ...}
_Refs = Mapping[Any, dict[str, Any]]
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Invalid input; the message names what was wrong",
    401: "Missing or wrong bearer token",
    404: "No such resource",
    409: "Refused in the current state",
    503: "Kafka, the state database or a side's API cannot be reached",
}


def openapi_document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    for e in endpoints:
        if e.body is not None:
            wanted.append((e.body, "validation"))
        if e.response is not None:
            wanted.append((e.response, "serialization"))
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Mappings, synchronization jobs and their errors, couplings, "
            "consumer lag and operator commands of tablesync. Every path but the health "
            "probe and the dashboard's page needs `Authorization: Bearer <admin token>`.",
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(e: Endpoint, refs: _Refs) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": e.handler.__name__,
        "summary": e.summary,
        "tags": [e.tag],
    }
    if e.description:
        op["description"] = e.description
    parameters = _parameters(e.params, "path") + _parameters(e.query, "query")
    if parameters:
        op["parameters"] = parameters
    if e.body is not None:
        op["requestBody"] = {
            "required": any(f.is_required() for f in e.body.model_fields.values()),
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    op["responses"] = {str(e.status): _success(e, refs)}
    for status in e.also:
        op["responses"][str(status)] = {**_success(e, refs), "description": _STATUS_TEXT[status]}
    errors = (*e.errors, *(() if e.public else (401,)))
    for status in sorted(set(errors)):
        op["responses"][str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {"application/json": {"schema": refs[(ErrorOut, "serialization")]}},
        }
    if e.public:
        op["security"] = []
    return op


def _success(e: Endpoint, refs: _Refs) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _STATUS_TEXT.get(e.status, "OK")}
    if e.response is not None:
        schema = refs[(e.response, "serialization")]
        if e.many:
            schema = {"type": "array", "items": schema}
        response["content"] = {"application/json": {"schema": schema}}
    elif e.media_type == "application/json":
        response["content"] = {"application/json": {"schema": {"type": "object"}}}
    else:
        response["content"] = {e.media_type: {"schema": {"type": "string"}}}
    return response


def _parameters(
    model: type[BaseModel] | None, where: Literal["path", "query"]
) -> list[dict[str, Any]]:
    if model is None:
        return []
    properties = model.model_json_schema(ref_template=_REF).get("properties", {})
    parameters = []
    for name, info in model.model_fields.items():
        schema = dict(properties[name])
        schema.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or info.is_required(),
            "schema": schema,
        }
        if info.description:
            parameter["description"] = info.description
            schema.pop("description", None)
        parameters.append(parameter)
    return parameters
