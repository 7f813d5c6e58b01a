"""``tablesync infra``: the local Kafka and PostgreSQL servers."""

from __future__ import annotations

import typer

from tablesync.localinfra import command

app = typer.Typer(
    help="The local Kafka and PostgreSQL servers (no Docker needed).", no_args_is_help=True
)


def _run(name: str, as_json: bool) -> None:
    raise typer.Exit(command.main([name, *(["--json"] if as_json else [])]))


@app.command()
def up(json: bool = typer.Option(False, "--json", help="Print a JSON report.")) -> None:
    """Install if needed, start, and wait until both servers answer."""
    _run("up", json)


@app.command()
def down(json: bool = typer.Option(False, "--json", help="Print a JSON report.")) -> None:
    """Stop the servers tablesync started; leaves no process behind."""
    _run("down", json)


@app.command()
def status(json: bool = typer.Option(False, "--json", help="Print a JSON report.")) -> None:
    """Report each server: running, external, stopped; exit 1 unless both are usable."""
    _run("status", json)


@app.command()
def purge() -> None:
    """Stop the servers and delete their local data."""
    _run("purge", False)
