"""Entry point of the ``tablesync`` command."""

from __future__ import annotations

import typer

from tablesync.cli import db, infra

app = typer.Typer(
    name="tablesync",
    help="Keep Business Central and Dataverse tables in sync through Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(infra.app, name="infra")


def main() -> None:
    app()
