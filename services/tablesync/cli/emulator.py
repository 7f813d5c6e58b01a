"""``tablesync emulator``: the local Business Central and Dataverse API emulators."""

from __future__ import annotations

from enum import StrEnum

import typer

from tablesync.cli.common import fail, load_settings, run_async
from tablesync.core.events import Side
from tablesync.emulators import seed as seeding
from tablesync.emulators.common.custom import load_customizations
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import run
from tablesync.settings import Settings, redact_dsn

app = typer.Typer(help="The Business Central and Dataverse API emulators.", no_args_is_help=True)


class SideName(StrEnum):
    bc = "bc"
    dataverse = "dataverse"


def _side(name: SideName) -> Side:
    return "bc" if name is SideName.bc else "dataverse"


def _serve(side: Side, host: str | None, port: int | None, token: str | None) -> None:
    settings = load_settings()
    emulator = settings.emulator
    config = EmulatorConfig.from_settings(settings, side, token)
    bind_host = host or emulator.host
    bind_port = port or (emulator.bc_port if side == "bc" else emulator.dataverse_port)
    if side == "bc":
        from tablesync.emulators.bc import create_app  # noqa: PLC0415
    else:
        from tablesync.emulators.dataverse import create_app  # noqa: PLC0415
    root = "/BC/api/v2.0" if side == "bc" else "/api/data/v9.2"
    typer.echo(f"{side} emulator on http://{bind_host}:{bind_port}{root}", err=True)
    run(create_app(config), bind_host, bind_port)


_HOST = typer.Option(None, help="Address to listen on (default: settings, 127.0.0.1).")
_PORT = typer.Option(None, help="Port to listen on (default: settings, 7048 / 7049).")
_TOKEN = typer.Option(
    None, help="Bearer token to accept (default: TABLESYNC_EMULATOR__TOKEN or local-dev-token)."
)


@app.command("bc")
def bc_command(
    host: str | None = _HOST, port: int | None = _PORT, token: str | None = _TOKEN
) -> None:
    """Serve the Business Central API v2.0 emulator."""
    _serve("bc", host, port, token)


@app.command("dataverse")
def dataverse_command(
    host: str | None = _HOST, port: int | None = _PORT, token: str | None = _TOKEN
) -> None:
    """Serve the Dataverse Web API v9.2 emulator."""
    _serve("dataverse", host, port, token)


def _dsn(settings: Settings, side: Side) -> str:
    return settings.emulator_dsn(side)


@app.command("seed")
def seed_command(
    side: SideName = typer.Argument(..., help="Which emulator's database."),
    demo: bool = typer.Option(False, "--demo", help="The small CRONUS-like demo set."),
    synthetic: int | None = typer.Option(
        None, "--synthetic", metavar="N", help="N rows in every table, with valid references."
    ),
    reset: bool = typer.Option(False, "--reset", help="Empty the tables first."),
) -> None:
    """Load demo or synthetic data into an emulator's database."""
    if demo == (synthetic is not None):
        fail("give exactly one of --demo and --synthetic N")
    settings = load_settings()
    which = _side(side)
    dsn = _dsn(settings, which)
    custom = load_customizations(settings.emulator.custom)
    try:
        if synthetic is not None:
            report = run_async(
                seeding.seed_synthetic(which, dsn, synthetic, wipe=reset, custom=custom)
            )
        else:
            report = run_async(seeding.seed_demo(which, dsn, wipe=reset, custom=custom))
    except ValueError as exc:
        fail(str(exc))
    for table, rows in report.rows.items():
        typer.echo(f"{table}: {rows} rows")
    typer.echo(f"seeded {which} in {report.seconds:.2f} s ({redact_dsn(dsn)})")


@app.command("reset")
def reset_command(side: SideName = typer.Argument(..., help="Which emulator's database.")) -> None:
    """Empty every table of an emulator's database (baseline rows stay)."""
    settings = load_settings()
    which = _side(side)
    custom = load_customizations(settings.emulator.custom)
    run_async(seeding.reset(which, _dsn(settings, which), custom=custom))
    typer.echo(f"{which} emulator database emptied")
