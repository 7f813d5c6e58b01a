"""``tablesync health``: ask a service process whether it is ready (or live),
or an emulator whether it answers, as a container healthcheck does."""

from __future__ import annotations

from enum import StrEnum

import httpx
import typer

from tablesync.cli.common import EXIT_USAGE, fail
from tablesync.settings import Settings

__all__ = ["health"]

EXIT_UNHEALTHY = 1


class Emulator(StrEnum):
    bc = "bc"
    dataverse = "dataverse"


def health(
    live: bool = typer.Option(False, "--live", help="Ask /livez instead of /readyz."),
    url: str | None = typer.Option(
        None, help="The health server (default: http://127.0.0.1:$TABLESYNC_HEALTH__PORT)."
    ),
    emulator: Emulator | None = typer.Option(
        None, help="Ask the local emulator of this side instead (its API, with its token)."
    ),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
) -> None:
    """Exit 0 when the process on the health port is ready (live with --live; with
    --emulator, when the emulator answers its token), 1 when not (the reasons
    printed), 2 when nothing answers there."""
    settings = Settings()
    headers: dict[str, str] = {}
    if emulator is not None:
        e = settings.emulator
        headers["Authorization"] = f"Bearer {e.token.get_secret_value()}"
        target = (
            f"http://127.0.0.1:{e.bc_port}/BC/api/v2.0/companies"
            if emulator is Emulator.bc
            else f"http://127.0.0.1:{e.dataverse_port}/api/data/v9.2/WhoAmI"
        )
    else:
        if url is None:
            port = settings.health.port
            if port is None:
                fail("TABLESYNC_HEALTH__PORT is not set: no health server to ask")
            url = f"http://127.0.0.1:{port}"
        target = url.rstrip("/") + ("/livez" if live else "/readyz")
    try:
        response = httpx.get(target, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        fail(f"{target}: {type(exc).__name__}: {exc}", EXIT_USAGE)
    if emulator is None:
        typer.echo(response.text)
    else:
        typer.echo(f"{target}: {response.status_code}")
    if response.status_code != 200:
        raise typer.Exit(EXIT_UNHEALTHY)
