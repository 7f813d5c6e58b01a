"""``tablesync db``: the state database."""

from __future__ import annotations

import typer

from tablesync.adapters.postgres import migrate
from tablesync.cli.common import load_settings, run_async

app = typer.Typer(help="The state database.", no_args_is_help=True)


@app.command("migrate")
def migrate_command() -> None:
    """Apply every migration not applied yet (idempotent)."""
    settings = load_settings()
    applied = run_async(migrate(settings.database_dsn()))
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:03d}_{m.name}")
    else:
        typer.echo("database is up to date")
