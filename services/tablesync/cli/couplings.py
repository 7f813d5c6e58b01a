"""``tablesync couplings``, ``couple`` and ``uncouple``."""

from __future__ import annotations

import uuid

import typer

from tablesync.cli.common import fail, load_settings, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core.couplings import Coupling
from tablesync.core.events import Side
from tablesync.core.stored import CouplingRow

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
        async with open_operator(load_settings()) as operator:
            return await operator.couplings(mapping=mapping, search=search, limit=limit)

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
    """Couple a BC record with a Dataverse row; the next change of either syncs.
    Both must exist, and neither may be coupled to another record already."""
    bc, dv = _guid(bc_id, "--bc-id"), _guid(dataverse_id, "--dataverse-id")

    async def go() -> CouplingRow:
        async with open_operator(load_settings()) as operator:
            return await operator.couple(mapping, bc, dv)

    coupled = run_async(go()).coupling
    typer.echo(f"coupled {mapping}: bc {coupled.bc_id} <-> dataverse {coupled.dv_id}")


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

    async def go() -> Coupling:
        async with open_operator(load_settings()) as operator:
            return await operator.uncouple(mapping, side, record)

    removed = run_async(go())
    typer.echo(f"uncoupled {mapping}: bc {removed.bc_id} <-> dataverse {removed.dv_id}")
