"""``full-sync --wait``'s progress: bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from tablesync.adapters.postgres.jobs import JobTotals, RunRow
from tablesync.cli.progress import BarProgress, PlainProgress, progress_display
from tablesync.core.plan import COUNTED
from tablesync.runtime.operations import RunProgress

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _job(mapping: str, direction: str, status: str, finished: int, **counts: int) -> JobTotals:
    return JobTotals(
        job_id=f"{mapping}-{direction}",
        run_id="run-1",
        mapping=mapping,
        direction=direction,
        kind="full",
        type="synchronization",
        status=status,
        started_at=T0,
        finished_at=T0 if status == "finished" else None,
        partitions=3,
        partitions_finished=finished,
        message="",
        counts={c: counts.get(c, 0) for c in COUNTED},
    )


def _progress(*jobs: JobTotals) -> RunProgress:
    run = RunRow("run-1", "full", "running", [], {}, "cli", T0, T0, None, "")
    return RunProgress(run, list(jobs))


async def test_bars_show_each_mapping_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with progress_display(
        ["CURRENCY", "CUSTOMER", "CONTACTS"], quiet=False, console=console
    ) as show:
        assert isinstance(show, BarProgress)
        await show(
            _progress(
                _job("CURRENCY", "to_integration", "finished", 3, inserted=5),
                _job("CUSTOMER", "to_integration", "running", 1, inserted=2, modified=1),
            )
        )
    text = out.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    final = {
        name: next(line for line in reversed(lines) if name in line)
        for name in ("CURRENCY", "CUSTOMER", "CONTACTS")
    }
    assert "100%" in final["CURRENCY"] and "finished" in final["CURRENCY"]
    assert "inserted=5" in final["CURRENCY"]
    assert " 33%" in final["CUSTOMER"] and "running" in final["CUSTOMER"]
    assert "inserted=2 modified=1" in final["CUSTOMER"]
    assert "0%" in final["CONTACTS"] and "waiting" in final["CONTACTS"]
    assert "━" in final["CURRENCY"]


async def test_plain_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with progress_display(["CUSTOMER"], quiet=False, console=console) as show:
        assert isinstance(show, PlainProgress)
        job = _job("CUSTOMER", "to_integration", "running", 0, inserted=2)
        await show(_progress(job))
        await show(_progress(job))  # unchanged: no second line
        await show(_progress(_job("CUSTOMER", "to_integration", "finished", 3, inserted=4)))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "CUSTOMER     to_integration    running   inserted=2",
        "CUSTOMER     to_integration    finished  inserted=4",
    ]


def test_quiet_shows_nothing() -> None:
    with progress_display(["CUSTOMER"], quiet=True) as show:
        assert show is None
