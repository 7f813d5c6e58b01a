"""Listings as tables on a terminal, or as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table

from tablesync.cli.common import print_json

__all__ = ["JOB_COUNTS", "render"]

JOB_COUNTS = [
    "inserted",
    "modified",
    "deleted",
    "unchanged",
    "skipped",
    "failed",
    "pending",
    "coupled",
    "unmatched",
]
"""The job log's counters, in the order BC's Integration Synchronization Jobs page shows them."""

_COLOURS = {"inserted": "green", "modified": "cyan", "failed": "red", "skipped": "yellow"}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def render(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    if as_json:
        print_json(list(rows))
        return
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in _NUMERIC else "left",
            style=_COLOURS.get(column),
        )
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=200).print(table)


_NUMERIC = frozenset({*JOB_COUNTS, "uncoupled", "attempts", "lag"})
