"""Entry point of the ``tablesync`` command."""

from __future__ import annotations

import typer

from tablesync import __version__
from tablesync.cli import (
    answer,
    catalog,
    couplings,
    db,
    demo,
    emulator,
    health,
    infra,
    jobs,
    lag,
    mappings,
    record_log,
    recovery,
    run,
    runs,
    sync,
)

app = typer.Typer(
    name="tablesync",
    help="Keep Business Central and Dataverse tables in sync through Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tablesync {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Keep Business Central and Dataverse tables in sync through Kafka."""


app.add_typer(run.app, name="run")
app.add_typer(mappings.app, name="mappings")
app.add_typer(db.app, name="db")
app.add_typer(infra.app, name="infra")
app.add_typer(emulator.app, name="emulator")
app.command("demo")(demo.demo)
app.command("health")(health.health)
app.command("catalog")(catalog.catalog)
app.command("full-sync")(sync.full_sync)
app.command("sync-modified")(sync.sync_modified)
app.command("couple-by-match")(sync.couple_by_match)
app.command("runs")(runs.runs)
app.command("cancel")(runs.cancel)
app.command("answer")(answer.answer)
app.add_typer(jobs.app, name="jobs")
app.command("errors")(recovery.errors)
app.command("sync-record")(recovery.sync_record)
app.command("retry")(recovery.retry)
app.command("restore")(recovery.restore)
app.command("delete-records")(recovery.delete_records)
app.command("delete-couplings")(recovery.delete_couplings)
app.command("find-deleted")(recovery.find_deleted)
app.command("replay")(recovery.replay)
app.command("record-log")(record_log.record_log)
app.command("lag")(lag.lag)
app.command("couplings")(couplings.couplings)
app.command("couple")(couplings.couple)
app.command("uncouple")(couplings.uncouple)


def main() -> None:
    app()
