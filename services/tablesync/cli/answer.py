"""The question a full synchronization asks at its end, on a terminal:
``full-sync --wait`` prompts for it, ``tablesync answer`` answers from anywhere."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import typer

from tablesync.application import Operator
from tablesync.cli.common import fail, load_settings, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.cli.progress import BarProgress, ProgressHook
from tablesync.cli.runs import _COLUMNS, _row
from tablesync.core.stored import RunRow
from tablesync.errors import CommandRefused
from tablesync.runtime.operations import RunProgress

__all__ = ["answer", "asks_on_terminal", "keep_prompt", "parse_keep", "prompting"]


def asks_on_terminal() -> bool:
    """A full synchronization asks its question when someone can answer it here."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def keep_prompt(mappings: Sequence[str]) -> str:
    return f"Keep 'sync only coupled records' cleared on {', '.join(mappings) or 'all'}? [y/N] "


def parse_keep(text: str) -> bool:
    """Yes keeps the setting cleared; anything else, an empty line too, restores it."""
    return text.strip().lower() in ("y", "yes")


def _read_line(prompt: str) -> str | None:
    # On stderr, as the progress is: stdout stays the run's result.
    typer.echo(prompt, err=True, nl=False)
    line = sys.stdin.readline()
    return line if line else None


def prompting(operator: Operator, run_id: str, show: ProgressHook | None) -> ProgressHook:
    """The progress hook of ``--wait`` that also asks the run's question once."""
    asked = False

    async def hook(progress: RunProgress) -> None:
        nonlocal asked
        if show is not None:
            await show(progress)
        if asked or progress.run.question is None:
            return
        asked = True
        bars = show if isinstance(show, BarProgress) else None
        if bars is not None:
            bars.stop()
        try:
            line = await asyncio.to_thread(_read_line, keep_prompt(progress.run.mappings))
            if line is None:
                typer.echo("\nno answer: the run restores the setting when its wait ends", err=True)
                return
            try:
                await operator.answer(run_id, parse_keep(line), requested_by="cli")
            except CommandRefused as exc:
                typer.echo(f"answer not taken: {exc}", err=True)
        finally:
            if bars is not None:
                bars.start()

    return hook


def answer(
    run_id: str = typer.Argument(
        ..., help="The full synchronization asking (see `tablesync runs`)."
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Keep sync-only-coupled cleared, so new records keep being created."
    ),
    restore: bool = typer.Option(
        False, "--restore", help="Restore each mapping's sync-only-coupled as it was."
    ),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Answers the question a full synchronization asks at its end: keep "sync only
    coupled records" cleared on its mappings, or restore it."""
    if keep == restore:
        fail("say --keep or --restore")

    async def go() -> RunRow:
        async with open_operator(load_settings()) as operator:
            return await operator.answer(run_id, keep, requested_by="cli")

    render([_row(run_async(go()))], _COLUMNS, as_json=json, title="Run answered")
