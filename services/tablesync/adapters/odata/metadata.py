"""Reading the services' metadata over HTTP; ``tablesync.core.metadata`` parses it.

Business Central: ``GET <bc root>/api/<route>/$metadata`` per API route, the standard
one (``v2.0``) and each custom API's (``<publisher>/<group>/<version>``); the document
needs no company.

Dataverse ("Query table definitions using the Web API"):

- ``GET EntityDefinitions?$select=…&$expand=Attributes($select=…)``, filtered on
  ``LogicalName`` or ``EntitySetName`` for one table: the tables with the properties
  every attribute has;
- for one table, its derived attribute types through their casts,
  ``EntityDefinitions(LogicalName='…')/Attributes/Microsoft.Dynamics.CRM.<type>``:
  ``MaxLength`` of strings and memos, ``OptionSet`` and ``GlobalOptionSet`` of choices
  and the options of ``statecode`` and ``statuscode`` (``$expand``), ``Targets`` of
  lookups. Multi-select choices are not read yet. A property of a derived type cannot be selected
  on ``AttributeMetadata`` itself, hence one request per type.

``MetadataCache`` keeps what was read per connector until asked to read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from tablesync.adapters.odata.base import query
from tablesync.adapters.odata.http import ODataHttp, Reply, error_message
from tablesync.core.metadata import (
    MetadataInvalid,
    TableInfo,
    parse_csdl,
    parse_entity_definition,
    parse_lookup_navigations,
)
from tablesync.errors import ApiError

__all__ = [
    "MetadataCache",
    "bc_root",
    "read_bc_route",
    "read_dataverse",
    "read_dataverse_navigations",
]

_CRM = "Microsoft.Dynamics.CRM"
_TABLE_PROPERTIES = (
    "LogicalName",
    "EntitySetName",
    "PrimaryIdAttribute",
    "PrimaryNameAttribute",
    "IsCustomEntity",
)
_ATTRIBUTE_PROPERTIES = (
    "LogicalName",
    "AttributeType",
    "AttributeTypeName",
    "RequiredLevel",
    "IsValidForCreate",
    "IsValidForUpdate",
    "IsCustomAttribute",
    "IsPrimaryId",
)
# Derived attribute types and what each adds: ($select, $expand).
_DETAILS: tuple[tuple[str, str, str | None], ...] = (
    ("StringAttributeMetadata", "LogicalName,MaxLength", None),
    ("MemoAttributeMetadata", "LogicalName,MaxLength", None),
    ("PicklistAttributeMetadata", "LogicalName", "OptionSet,GlobalOptionSet"),
    ("StateAttributeMetadata", "LogicalName", "OptionSet"),
    ("StatusAttributeMetadata", "LogicalName", "OptionSet"),
    ("LookupAttributeMetadata", "LogicalName,Targets", None),
)


def bc_root(base_path: str) -> str:
    """The part of a BC API base path before its ``/api/`` segment (``/BC``)."""
    path = base_path.rstrip("/") + "/"
    return path[: path.rindex("/api/")] if "/api/" in path else path.rstrip("/")


def _refused(what: str, reply: Reply, side: str) -> ApiError:
    return ApiError(
        f"GET {what}: {reply.status} {error_message(reply.data, reply.content)}",
        side=side,
        status=reply.status,
    )


def _no_json(response: httpx.Response) -> None:
    return None


async def read_bc_route(http: ODataHttp, root: str, route: str, *, custom: bool) -> list[TableInfo]:
    """The entity sets of one BC API route, from its ``$metadata``."""
    path = f"{root}/api/{route.strip('/')}/$metadata"
    reply = await http.send("GET", path, headers={"Accept": "application/xml"}, decode=_no_json)
    if reply.status >= 400:
        raise _refused(path, reply, "bc")
    try:
        return parse_csdl(reply.content, route=route, custom=custom)
    except MetadataInvalid as exc:
        raise ApiError(str(exc), side="bc") from None


async def read_dataverse_navigations(http: ODataHttp) -> dict[str, dict[str, str]]:
    """Each table's lookup navigation properties, from Dataverse's ``$metadata``."""
    reply = await http.send(
        "GET", "$metadata", headers={"Accept": "application/xml"}, decode=_no_json
    )
    if reply.status >= 400:
        raise _refused("$metadata", reply, "dataverse")
    try:
        return parse_lookup_navigations(reply.content)
    except MetadataInvalid as exc:
        raise ApiError(str(exc), side="dataverse") from None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def _get_json(http: ODataHttp, path: str) -> Any:
    reply = await http.send("GET", path, headers={"Accept": "application/json"})
    if reply.status >= 400:
        raise _refused(path.split("?", 1)[0], reply, "dataverse")
    return reply.data


def _values(data: Any) -> list[Mapping[str, Any]]:
    values = data.get("value") if isinstance(data, dict) else None
    if not isinstance(values, list):
        raise ApiError("a metadata answer without a 'value' array", side="dataverse")
    return [v for v in values if isinstance(v, dict)]


async def read_dataverse(http: ODataHttp, table: str | None = None) -> list[TableInfo]:
    """Dataverse's tables, or the one whose logical or entity set name is ``table`` with
    the details of its columns (none when there is no such table)."""
    options = [
        ("$select", ",".join(_TABLE_PROPERTIES)),
        ("$expand", f"Attributes($select={','.join(_ATTRIBUTE_PROPERTIES)})"),
    ]
    if table is not None:
        literal = _literal(table)
        options.insert(1, ("$filter", f"LogicalName eq {literal} or EntitySetName eq {literal}"))
    definitions = _values(await _get_json(http, query("EntityDefinitions", options)))
    if table is None:
        try:
            return [parse_entity_definition(d, detailed=False) for d in definitions]
        except MetadataInvalid as exc:
            raise ApiError(str(exc), side="dataverse") from None
    described = []
    for definition in definitions:
        attributes = {
            str(a.get("LogicalName")): dict(a)
            for a in definition.get("Attributes") or ()
            if isinstance(a, dict)
        }
        base = f"EntityDefinitions(LogicalName={_literal(str(definition.get('LogicalName')))})"
        details = await asyncio.gather(
            *(
                _get_json(
                    http,
                    query(
                        f"{base}/Attributes/{_CRM}.{cast}",
                        [("$select", select), *([("$expand", expand)] if expand else [])],
                    ),
                )
                for cast, select, expand in _DETAILS
            )
        )
        for data in details:
            for extra in _values(data):
                known = attributes.get(str(extra.get("LogicalName")))
                if known is not None:
                    known.update((k, v) for k, v in extra.items() if not k.startswith("@"))
        try:
            described.append(parse_entity_definition(definition, list(attributes.values())))
        except MetadataInvalid as exc:
            raise ApiError(str(exc), side="dataverse") from None
    return described


class MetadataCache:
    """What a connector read of its service's metadata, by what was asked."""

    def __init__(self) -> None:
        self._known: dict[str, list[TableInfo]] = {}
        self._lock = asyncio.Lock()

    async def get(
        self, key: str, load: Callable[[], Awaitable[list[TableInfo]]], *, refresh: bool = False
    ) -> list[TableInfo]:
        async with self._lock:
            if refresh or key not in self._known:
                self._known[key] = await load()
            return self._known[key]

    def clear(self) -> None:
        self._known.clear()
