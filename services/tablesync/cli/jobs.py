"""``tablesync jobs``: the integration synchronization job log, and ``jobs
prune``, which deletes the jobs older than the retention."""

from __future__ import annotations

from datetime import datetime

import typer

from tablesync.cli.common import load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import JOB_COUNTS, render
from tablesync.core.stored import JobTotals
from tablesync.ports.state import Pruned

__all__ = ["app", "jobs", "prune"]

_COLUMNS = ["started_at", "mapping", "direction", "kind", "status", *JOB_COUNTS, "message"]

app = typer.Typer(
    help="Integration synchronization jobs, newest first, with their counts.",
    invoke_without_command=True,
)


@app.callback()
def jobs(
    ctx: typer.Context,
    run: str | None = typer.Option(None, "--run", help="Only the jobs of this run."),
    mapping: str | None = typer.Option(None, "--mapping", help="Only this mapping."),
    company: str | None = typer.Option(
        None, "--company", help="Only the jobs of this BC company (its id)."
    ),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Integration synchronization jobs, newest first, with their counts."""
    if ctx.invoked_subcommand is not None:
        return

    async def go() -> list[JobTotals]:
        async with open_operator(load_settings()) as operator:
            return await operator.jobs(run_id=run, mapping=mapping, limit=limit, company=company)

    rows = [j.as_dict() for j in run_async(go())]
    # The company column only where there is a company to show: one company, no column.
    columns = _COLUMNS
    if any("company" in r for r in rows):
        columns = [*_COLUMNS[:2], "company", *_COLUMNS[2:]]
    render(rows, columns, as_json=json, title="Integration synchronization jobs")


@app.command()
def prune(
    older_than: float | None = typer.Option(
        None,
        "--older-than",
        help="Days since the job ended; TABLESYNC_SYNC__JOB_RETENTION_DAYS (90) when left out.",
    ),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete the jobs that ended more than --older-than days ago, with their errors.

    Their counts, their record log rows and the runs left without jobs go too; a
    job that has not ended, or of a run still open, is kept. The coordinator does
    the same every hour."""

    async def go() -> tuple[datetime, Pruned]:
        async with open_operator(load_settings()) as operator:
            return await operator.prune_jobs(older_than)

    before, pruned = run_async(go())
    if json:
        print_json({"before": before, **pruned.as_dict()})
        return
    typer.echo(
        f"pruned {pruned.jobs} jobs, {pruned.errors} job errors, {pruned.record_log} "
        f"record log rows and {pruned.runs} runs "
        f"that ended before {before.isoformat(timespec='seconds')}"
    )
