"""``tablesync record-log``: what tablesync decided and wrote for one record,
and in which job."""

from __future__ import annotations

import dataclasses

import typer

from tablesync.cli.common import fail, load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core.effects import LogEntry

__all__ = ["record_log"]

_COLUMNS = [
    "at",
    "job_id",
    "decision",
    "direction",
    "source_side",
    "source_id",
    "counterpart_id",
    "fields",
    "message",
]


def record_log(
    mapping: str = typer.Option(..., "--mapping", help="The mapping, e.g. CUSTOMER."),
    bc_id: str | None = typer.Option(None, "--bc-id", help="The BC record's id."),
    dataverse_id: str | None = typer.Option(None, "--dataverse-id", help="The Dataverse row's id."),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What tablesync decided for one record, newest first: each decision in the
    counters' words (inserted, modified, unchanged, failed...), the job it counted
    in, the direction written and the names of the fields written; the decisions
    on its counterpart are shown too."""
    if (bc_id is None) == (dataverse_id is None):
        fail("give exactly one of --bc-id and --dataverse-id")
    side = "bc" if bc_id else "dataverse"
    record = bc_id or dataverse_id or ""

    async def go() -> list[LogEntry]:
        async with open_operator(load_settings()) as operator:
            return await operator.record_log(mapping, side, record, limit=limit)

    entries = run_async(go())
    if json:
        print_json([dataclasses.asdict(e) for e in entries])
        return
    if not entries:
        typer.echo(
            f"{mapping}: no record log for {side} record {record}: tablesync has counted "
            "no decision on it, or the jobs it counted in were pruned "
            "(TABLESYNC_SYNC__JOB_RETENTION_DAYS)"
        )
        return
    rows = [
        {
            **dataclasses.asdict(e),
            "decision": ", ".join(e.decision),
            "fields": ", ".join(e.fields),
        }
        for e in entries
    ]
    render(rows, _COLUMNS, as_json=False, title=f"Record log of {mapping} {side} {record}")
