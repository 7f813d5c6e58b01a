"""What every sub-command shares: settings, exit codes, JSON output, async entry."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from datetime import date, datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from tablesync.errors import TablesyncError
from tablesync.logging import configure_logging
from tablesync.settings import Settings

__all__ = [
    "EXIT_FAILED_RECORDS",
    "EXIT_OK",
    "EXIT_USAGE",
    "fail",
    "load_settings",
    "print_json",
    "run_async",
]

EXIT_OK = 0
EXIT_FAILED_RECORDS = 1
EXIT_USAGE = 2

T = TypeVar("T")


def load_settings() -> Settings:
    """The settings, or exit 2 naming each variable that is wrong."""
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(
            "settings: "
            + "; ".join(
                f"TABLESYNC_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
        )
    except (TablesyncError, SettingsError) as exc:
        fail(f"settings: {exc}")
    configure_logging(settings.log_format, settings.log_level)
    return settings


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs ``coro``; tablesync errors and refused connections become one-line reasons."""
    try:
        return _event_loop_run(coro)
    except TablesyncError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"connection failed: {exc}")


def _event_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    # uvloop where it is installed: the services spend much of their time in
    # the event loop's socket handling.
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(value: object) -> None:
    json.dump(value, sys.stdout, default=_default, indent=2, sort_keys=False)
    sys.stdout.write("\n")
