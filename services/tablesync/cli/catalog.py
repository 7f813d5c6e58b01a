"""``tablesync catalog``: the tables and fields the live services describe in their metadata,
and which of them tablesync's built-in catalog knows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum

import typer

from tablesync.adapters.odata import BcApi, DataverseApi
from tablesync.cli.common import fail, load_settings, print_json, run_async
from tablesync.cli.output import render
from tablesync.core import catalog as builtin
from tablesync.core.events import Side
from tablesync.core.metadata import FieldInfo, TableInfo
from tablesync.settings import Settings

__all__ = ["catalog", "connectors"]

_OPTIONS_SHOWN = 6


class SideName(StrEnum):
    bc = "bc"
    dataverse = "dataverse"


@asynccontextmanager
async def connectors(settings: Settings) -> AsyncIterator[tuple[BcApi, DataverseApi]]:
    """Both connectors, for reading metadata only: BC's company is never looked up."""
    bc = BcApi(settings.bc)
    try:
        dataverse = DataverseApi(settings.dataverse)
        try:
            yield bc, dataverse
        finally:
            await dataverse.aclose()
    finally:
        await bc.aclose()


def _entity(side: Side, entity_set: str) -> builtin.Entity | None:
    return builtin.CATALOG.get((side, entity_set))


def _known_field(side: Side, table: TableInfo, field: FieldInfo) -> bool:
    entity = _entity(side, table.entity_set)
    if entity is None:
        return False
    return field.name in entity.fields or field.name in entity.lookups


def table_row(table: TableInfo) -> dict[str, object]:
    return {
        "side": table.side,
        "name": table.name,
        "entity_set": table.entity_set,
        "custom": table.custom,
        "fields": len(table.fields),
        "builtin": _entity(table.side, table.entity_set) is not None,
        **({"route": table.route} if table.route else {}),
    }


def field_row(table: TableInfo, field: FieldInfo) -> dict[str, object]:
    return {
        "name": field.name,
        "type": field.type,
        "max_length": field.max_length,
        "key": field.key,
        "read_only": field.read_only,
        "create_only": field.creatable and not field.updatable,
        "required": field.required,
        "custom": field.custom,
        "builtin": _known_field(table.side, table, field),
        "options": [{"value": o.value, "label": o.label} for o in field.options],
        "targets": list(field.targets),
    }


def _text(row: dict[str, object]) -> dict[str, object]:
    options = row["options"]
    assert isinstance(options, list)
    shown = ", ".join(f"{o['value']}={o['label']}" for o in options[:_OPTIONS_SHOWN])
    if len(options) > _OPTIONS_SHOWN:
        shown += f", … ({len(options)})"
    targets = row["targets"]
    assert isinstance(targets, list)
    flags = [
        name
        for name, on in (
            ("key", row["key"]),
            ("read-only", row["read_only"]),
            ("create-only", row["create_only"]),
            ("required", row["required"]),
            ("custom", row["custom"]),
        )
        if on
    ]
    return {
        **row,
        "flags": " ".join(flags),
        "builtin": "yes" if row["builtin"] else "",
        "options/targets": shown or ", ".join(str(t) for t in targets),
    }


async def _tables(
    settings: Settings, sides: Sequence[Side], table: str | None, routes: Sequence[str]
) -> list[TableInfo]:
    async with connectors(settings) as (bc, dataverse):
        found: list[TableInfo] = []
        for side in sides:
            if side == "bc":
                found.extend(await bc.describe(table, routes=routes))
            else:
                found.extend(await dataverse.describe(table))
        return found


def catalog(
    side: SideName | None = typer.Argument(None, help="bc or dataverse (default: both)."),
    table: str | None = typer.Argument(
        None, help="A table (entity set or logical/entity type name): its fields."
    ),
    bc_route: list[str] = typer.Option(
        [], "--bc-route", help="Also a custom BC API route (publisher/group/version)."
    ),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The tables of both sides (or of SIDE), or the fields of TABLE, as the services'
    metadata describes them; `builtin` marks what tablesync's own catalog knows."""
    settings = load_settings()
    if table is not None and side is None:
        fail("name the side of the table: tablesync catalog bc|dataverse TABLE")
    sides: tuple[Side, ...] = ("bc", "dataverse") if side is None else (side.value,)
    tables = run_async(_tables(settings, sides, table, bc_route))
    if table is None:
        render(
            [table_row(t) for t in tables],
            ["side", "name", "entity_set", "custom", "fields", "builtin"],
            as_json=json,
            title="Tables",
        )
        return
    if not tables:
        fail(f"{sides[0]} has no table {table!r}")
    found = tables[0]
    fields = [field_row(found, f) for f in found.fields]
    if json:
        print_json({**table_row(found), "key": found.key, "fields": fields})
        return
    render(
        [_text(f) for f in fields],
        ["name", "type", "max_length", "flags", "builtin", "options/targets"],
        as_json=False,
        title=f"{found.side} {found.entity_set} ({found.name})",
    )
