"""``tablesync run``: the services."""

from __future__ import annotations

from typing import Literal

import typer

from tablesync.cli.common import fail, load_settings, run_async
from tablesync.composition import run_services

app = typer.Typer(help="Run a service until Ctrl-C or SIGTERM.", no_args_is_help=True)


@app.command()
def capture(
    side: str = typer.Option(..., "--side", help="bc or dataverse"),
) -> None:
    """Capture one side's changes (and serve its snapshots)."""
    if side not in ("bc", "dataverse"):
        fail("--side is bc or dataverse")
    side_name: Literal["bc", "dataverse"] = "bc" if side == "bc" else "dataverse"
    run_async(run_services(load_settings(), "capture", side=side_name))


@app.command()
def apply(
    mapping: str | None = typer.Option(
        None, "--mapping", help="One mapping; every mapping when left out."
    ),
) -> None:
    """Apply changes of one mapping (any number of instances per mapping)."""
    run_async(run_services(load_settings(), "apply", mapping=mapping))


@app.command()
def coordinator() -> None:
    """Run operator commands in dependency order (one instance is active)."""
    run_async(run_services(load_settings(), "coordinator"))


@app.command()
def admin() -> None:
    """Serve the admin API, the dashboard and /metrics (TABLESYNC_ADMIN_HOST/_PORT/_TOKEN)."""
    run_async(run_services(load_settings(), "admin"))


@app.command("all")
def run_all() -> None:
    """Capture of both sides, apply of every mapping, the coordinator and the admin server."""
    run_async(run_services(load_settings(), "all"))
