"""``tablesync runs`` and ``tablesync cancel``: the runs operators started."""

from __future__ import annotations

import dataclasses

import typer

from tablesync.cli.common import load_settings, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core.stored import RunRow

__all__ = ["cancel", "runs"]

_COLUMNS = ["requested_at", "run_id", "kind", "status", "mappings", "requested_by", "message"]


def _row(run: RunRow) -> dict[str, object]:
    row = dataclasses.asdict(run)
    row["mappings"] = ", ".join(run.mappings) or "all"
    return row


def runs(
    limit: int = typer.Option(20, help="At most this many, newest first."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Full synchronizations and synchronizations of modified records, newest first."""

    async def go() -> list[RunRow]:
        async with open_operator(load_settings()) as operator:
            return await operator.runs(limit=limit)

    render([_row(r) for r in run_async(go())], _COLUMNS, as_json=json, title="Runs")


def cancel(
    run_id: str = typer.Argument(..., help="The run to cancel (see `tablesync runs`)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cancels a requested or running run: the mapping being synchronized finishes
    its step, the steps after it do not start. Also releases a run whose
    coordinator is gone, so another full synchronization can start."""

    async def go() -> RunRow:
        async with open_operator(load_settings()) as operator:
            return await operator.cancel(run_id, requested_by="cli")

    render([_row(run_async(go()))], _COLUMNS, as_json=json, title="Run cancelled")
