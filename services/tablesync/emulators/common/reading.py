"""Shaping selected rows into OData JSON, and the ``@odata.nextLink`` of a page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.messages import ApiRequest
from tablesync.emulators.common.query import VERSION_ALIAS

__all__ = ["next_link", "shape_row"]


def shape_row(
    record: Any, fields: Sequence[FieldDef], etag: Callable[[int], str]
) -> dict[str, object]:
    """``{"@odata.etag": …, <field>: <value>, …}`` for one selected record."""
    row: dict[str, object] = {"@odata.etag": etag(record[VERSION_ALIAS])}
    for field in fields:
        row[field.name] = record[field.name]
    return row


def next_link(request: ApiRequest, token: str) -> str:
    """The request's own URL with ``$skiptoken`` replaced: a client follows it unchanged."""
    options = {k: v for k, v in request.query.items() if k != "$skiptoken"}
    options["$skiptoken"] = token
    query = urlencode(options, quote_via=quote, safe="$,'()")
    return f"{request.service_root}/{request.path}?{query}"
