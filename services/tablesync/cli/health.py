"""``tablesync health``: ask a service process whether it is ready (or live),
as a container healthcheck does."""

from __future__ import annotations

import httpx
import typer

from tablesync.cli.common import EXIT_USAGE, fail
from tablesync.settings import Settings

__all__ = ["health"]

EXIT_UNHEALTHY = 1


def health(
    live: bool = typer.Option(False, "--live", help="Ask /livez instead of /readyz."),
    url: str | None = typer.Option(
        None, help="The health server (default: http://127.0.0.1:$TABLESYNC_HEALTH__PORT)."
    ),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
) -> None:
    """Exit 0 when the process on the health port is ready (live with --live), 1 when
    not (its reasons printed), 2 when nothing answers there."""
    if url is None:
        port = Settings().health.port
        if port is None:
            fail("TABLESYNC_HEALTH__PORT is not set: no health server to ask")
        url = f"http://127.0.0.1:{port}"
    target = url.rstrip("/") + ("/livez" if live else "/readyz")
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        fail(f"{target}: {type(exc).__name__}: {exc}", EXIT_USAGE)
    typer.echo(response.text)
    if response.status_code != 200:
        raise typer.Exit(EXIT_UNHEALTHY)
