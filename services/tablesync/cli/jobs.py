"""``tablesync jobs``: the integration synchronization job log."""

from __future__ import annotations

import typer

from tablesync.cli.common import load_settings, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import JOB_COUNTS, render
from tablesync.core.stored import JobTotals

__all__ = ["jobs"]

_COLUMNS = ["started_at", "mapping", "direction", "kind", "status", *JOB_COUNTS, "message"]


def jobs(
    run: str | None = typer.Option(None, "--run", help="Only the jobs of this run."),
    mapping: str | None = typer.Option(None, "--mapping", help="Only this mapping."),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Integration synchronization jobs, newest first, with their counts."""

    async def go() -> list[JobTotals]:
        async with open_operator(load_settings()) as operator:
            return await operator.jobs(run_id=run, mapping=mapping, limit=limit)

    rows = [j.as_dict() for j in run_async(go())]
    render(rows, _COLUMNS, as_json=json, title="Integration synchronization jobs")
