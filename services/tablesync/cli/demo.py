"""``tablesync demo``: the whole pipeline on the local default, with demo data."""

from __future__ import annotations

import typer

from tablesync.cli.common import EXIT_FAILED_RECORDS, EXIT_OK, load_settings, run_async
from tablesync.cli.output import JOB_COUNTS, render
from tablesync.demo import run_demo
from tablesync.logging import configure_logging
from tablesync.runtime.operations import RunProgress

__all__ = ["demo"]

_COLUMNS = ["mapping", "direction", "status", *JOB_COUNTS, "started_at", "finished_at"]


def _show(progress: RunProgress) -> None:
    render(
        [j.as_dict() for j in progress.jobs],
        _COLUMNS,
        as_json=False,
        title=f"Integration synchronization jobs of full synchronization {progress.run.run_id}",
    )
    if progress.run.message:
        typer.echo(progress.run.message)


def demo(
    reset: bool = typer.Option(
        True, "--reset/--no-reset", help="Start from clean emulator data, state and topics."
    ),
    keep_running: bool = typer.Option(
        True, "--keep-running/--exit", help="Keep syncing until Ctrl-C after the full sync."
    ),
) -> None:
    """Both emulators with demo data, every service, a full synchronization."""
    settings = load_settings()
    if "log_level" not in settings.model_fields_set:
        # The job table is the demo's output; per-batch lines would bury it.
        configure_logging(settings.log_format, "warning")
    progress = run_async(
        run_demo(
            settings,
            reset=reset,
            keep_running=keep_running,
            show=_show,
            say=lambda line: typer.echo(line, err=True),
        )
    )
    raise typer.Exit(EXIT_FAILED_RECORDS if progress.failed_records else EXIT_OK)
