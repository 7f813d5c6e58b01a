"""Progress of a run while ``--wait`` waits: a live bar per mapping on a
terminal, plain lines (one per job whenever its counts change) otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tablesync.core.plan import COUNTED
from tablesync.runtime.operations import RunProgress

__all__ = ["BarProgress", "PlainProgress", "ProgressHook", "progress_display"]

ProgressHook = Callable[[RunProgress], Awaitable[None]]

_STYLES = {"finished": "green", "failed": "red", "running": "cyan", "waiting": "dim"}


class PlainProgress:
    """One line per job on stderr whenever its status or counts change."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[object, ...]] = {}

    async def __call__(self, progress: RunProgress) -> None:
        for job in progress.jobs:
            state = (job.status, *job.counts.values())
            if self._seen.get(job.job_id) != state:
                self._seen[job.job_id] = state
                counts = " ".join(f"{k}={v}" for k, v in job.counts.items() if v)
                typer.echo(f"{job.mapping:12} {job.direction:17} {job.status:9} {counts}", err=True)


class BarProgress:
    """A bar per mapping of the run, filled by the partitions its jobs finished."""

    def __init__(self, mappings: Sequence[str], console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[name]:<12}", style="bold"),
            BarColumn(bar_width=36),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[status]}"),
            TextColumn("{task.fields[counts]}", style="dim"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        for name in mappings:
            self._task(name)

    def _task(self, name: str) -> TaskID:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(
                name, total=1.0, name=name, status=_styled("waiting"), counts="", start=False
            )
        return self._tasks[name]

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    async def __call__(self, progress: RunProgress) -> None:
        for name in dict.fromkeys([*self._tasks, *(j.mapping for j in progress.jobs)]):
            jobs = [j for j in progress.jobs if j.mapping == name]
            task = self._task(name)
            if not jobs:
                continue
            if any(j.status == "failed" for j in jobs):
                status, share = "failed", 1.0
            elif all(j.status == "finished" for j in jobs):
                status, share = "finished", 1.0
            else:
                parts = sum(j.partitions or 0 for j in jobs)
                done = sum(j.partitions_finished for j in jobs)
                status, share = "running", min(done / parts, 0.99) if parts else 0.0
            totals = {c: sum(j.counts[c] for j in jobs) for c in COUNTED}
            counts = " ".join(f"{c}={v}" for c, v in totals.items() if v)
            self._progress.start_task(task)
            self._progress.update(
                task, completed=share, status=_styled(status), counts=counts or "no changes"
            )
            if status != "running":
                self._progress.stop_task(task)
        self._progress.refresh()


def _styled(status: str) -> str:
    style = _STYLES.get(status, "")
    return f"[{style}]{status:<8}[/]" if style else f"{status:<8}"


@contextlib.contextmanager
def progress_display(
    mappings: Sequence[str], *, quiet: bool, console: Console | None = None
) -> Iterator[ProgressHook | None]:
    """The hook to pass to ``Operator.wait``: None when quiet, bars when stderr
    is a terminal, plain lines otherwise."""
    if quiet:
        yield None
        return
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield PlainProgress()
        return
    bars = BarProgress(mappings, console)
    bars.start()
    try:
        yield bars
    finally:
        bars.stop()
