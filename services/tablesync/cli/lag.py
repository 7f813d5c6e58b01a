"""``tablesync lag``: consumer lag per group, topic and partition, and per mapping."""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tablesync.adapters.kafka import KafkaConnection
from tablesync.adapters.kafka.lag import LagReader, LagReport
from tablesync.admin.consumers import consumer_groups
from tablesync.cli.common import load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.composition import topics_for
from tablesync.settings import Settings

__all__ = ["lag"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _tables(report: LagReport) -> Group:
    partitions = Table(title=f"Consumer lag at {report.read_at:%Y-%m-%d %H:%M:%S} UTC")
    for column in ("group", "topic", "partition", "committed", "end", "lag", "oldest"):
        partitions.add_column(column, justify="left" if column in ("group", "topic") else "right")
    for p in report.partitions:
        partitions.add_row(
            p.group,
            p.topic,
            str(p.partition),
            "" if p.committed is None else str(p.committed),
            str(p.end),
            f"[yellow]{p.lag}[/]" if p.lag else "0",
            _age(p.oldest_age_s),
        )
    mappings = Table(title="Lag per mapping")
    for column in ("mapping", "group", "lag", "oldest", "partitions"):
        mappings.add_column(column, justify="left" if column in ("mapping", "group") else "right")
    for m in report.mappings():
        mappings.add_row(
            m.mapping,
            m.group,
            f"[yellow]{m.lag}[/]" if m.lag else "0",
            _age(m.oldest_age_s),
            str(m.partitions),
        )
    return Group(partitions, mappings)


async def _read(settings: Settings, reader: LagReader) -> LagReport:
    async with open_operator(settings) as operator:
        mappings = await operator.mappings()
    return await reader.read(consumer_groups(topics_for(settings), mappings))


async def _once(settings: Settings) -> LagReport:
    async with LagReader(
        KafkaConnection.from_settings(settings), client_id="tablesync-cli"
    ) as reader:
        return await _read(settings, reader)


async def _watch(settings: Settings, as_json: bool, interval: float) -> None:
    console = Console(width=200)
    async with LagReader(
        KafkaConnection.from_settings(settings), client_id="tablesync-cli"
    ) as reader:
        if console.is_terminal and not as_json:
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(_tables(await _read(settings, reader)), refresh=True)
                    await asyncio.sleep(interval)
        while True:
            report = await _read(settings, reader)
            if as_json:
                # One document per line, so the output can be piped and parsed per read.
                sys.stdout.write(jsonlib.dumps(report.as_dict()) + "\n")
                sys.stdout.flush()
            else:
                console.print(_tables(report))
            await asyncio.sleep(interval)


def lag(
    json: bool = typer.Option(False, "--json", help="Print JSON (with --watch: one per line)."),
    watch: bool = typer.Option(False, "--watch", help="Read again every --interval until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between reads."),
) -> None:
    """Consumer lag: committed offset, end offset, lag and the age of the oldest
    unprocessed event per group, topic and partition; totals per mapping."""
    settings = load_settings()
    if watch:
        try:
            run_async(_watch(settings, json, interval))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        return
    report = run_async(_once(settings))
    if json:
        print_json(report.as_dict())
    else:
        Console(width=200).print(_tables(report))
