"""``tablesync couplings``, ``couple`` and ``uncouple``."""

from __future__ import annotations

import uuid

import typer

from tablesync.adapters.odata import open_api
from tablesync.adapters.postgres.couplings import CouplingRow, CouplingStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.cli.common import fail, load_settings, run_async
from tablesync.cli.context import state_pool
from tablesync.cli.output import render
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Side
from tablesync.core.records import Row
from tablesync.settings import ApiSettings, Settings

__all__ = ["couple", "couplings", "uncouple"]


def _guid(value: str, option: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        fail(f"{option} {value!r} is not a GUID")


def couplings(
    mapping: str | None = typer.Option(None, "--mapping", help="Only this mapping."),
    search: str | None = typer.Option(None, "--search", help="A record id or BC key."),
    limit: int = typer.Option(100, help="At most this many."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Couplings: which BC record is which Dataverse row, and when they last synced."""

    async def go() -> list[CouplingRow]:
        async with state_pool(load_settings()) as pool:
            return await CouplingStore(pool).listing(mapping, search=search, limit=limit)

    rows = [
        {
            "mapping": r.coupling.mapping,
            "bc_id": r.coupling.bc_id,
            "dataverse_id": r.coupling.dv_id,
            "bc_key": r.coupling.bc_key,
            "coupled_at": r.coupled_at,
            "last_synced_at": r.last_synced_at,
            "last_direction": r.last_direction,
            "bc_deleted": r.coupling.bc_deleted,
            "dataverse_deleted": r.coupling.dv_deleted,
        }
        for r in run_async(go())
    ]
    render(
        rows,
        ["mapping", "bc_id", "dataverse_id", "bc_key", "last_synced_at", "last_direction"],
        as_json=json,
        title="Couplings",
    )


def couple(
    mapping: str = typer.Argument(..., help="The mapping, e.g. CUSTOMER."),
    bc_id: str = typer.Option(..., "--bc-id", help="The BC record's id."),
    dataverse_id: str = typer.Option(..., "--dataverse-id", help="The Dataverse row's id."),
) -> None:
    """Couple a BC record with a Dataverse row; the next change of either syncs."""
    bc, dv = _guid(bc_id, "--bc-id"), _guid(dataverse_id, "--dataverse-id")
    settings = load_settings()

    async def go() -> None:
        async with state_pool(settings) as pool:
            mappings = await MappingStore(pool).load()
            if mapping not in mappings:
                fail(f"unknown mapping {mapping!r} (known: {', '.join(mappings.names())})")
            m = mappings.get(mapping)
            rows = await _both_records(settings, m.bc_table, bc, m.dataverse_table, dv)
            key = rows["bc"].fields.get(m.bc_key) if m.bc_key else None
            # No stamps: the first change of either record after this syncs it.
            empty = Stamp(None, None)
            coupling = Coupling(
                mapping, bc, dv, key if isinstance(key, str) else None, empty, empty
            )
            await CouplingStore(pool).couple(coupling, None)

    run_async(go())
    typer.echo(f"coupled {mapping}: bc {bc} <-> dataverse {dv}")


async def _both_records(
    settings: Settings, bc_table: str, bc_id: str, dv_table: str, dv_id: str
) -> dict[Side, Row]:
    """Both records, read from their sides; a missing one is refused by name."""
    found: dict[Side, Row] = {}
    wanted: tuple[tuple[Side, str, str, ApiSettings], ...] = (
        ("bc", bc_table, bc_id, settings.bc),
        ("dataverse", dv_table, dv_id, settings.dataverse),
    )
    for side, table, record_id, api_settings in wanted:
        api = await open_api(side, api_settings)
        try:
            row = (await api.get_many(table, [record_id])).get(record_id)
        finally:
            await api.aclose()
        if row is None:
            fail(f"{side} has no {table} record {record_id}")
        found[side] = row
    return found


def uncouple(
    mapping: str = typer.Argument(..., help="The mapping, e.g. CUSTOMER."),
    bc_id: str | None = typer.Option(None, "--bc-id", help="The BC record's id."),
    dataverse_id: str | None = typer.Option(None, "--dataverse-id", help="The Dataverse row's id."),
) -> None:
    """Remove the coupling of a record; neither record is changed."""
    if (bc_id is None) == (dataverse_id is None):
        fail("give exactly one of --bc-id and --dataverse-id")
    side: Side = "bc" if bc_id else "dataverse"
    record = _guid(bc_id or dataverse_id or "", "--bc-id" if bc_id else "--dataverse-id")

    async def go() -> Coupling | None:
        async with state_pool(load_settings()) as pool:
            return await CouplingStore(pool).uncouple(mapping, side, record)

    removed = run_async(go())
    if removed is None:
        fail(f"{mapping}: {side} record {record} is not coupled")
    typer.echo(f"uncoupled {mapping}: bc {removed.bc_id} <-> dataverse {removed.dv_id}")
