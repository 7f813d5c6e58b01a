"""Thousands of seeded schedules of the whole engine on in-memory ports,
every invariant checked after each: the ``calm`` profile, where every port
call of capture, apply, the coordinator and the users may be delayed, so
they interleave in any order, but nothing crashes or fails (the other
profiles run with ``make simulate``).

``TABLESYNC_SIM_SCHEDULES`` (default 10,000) and ``TABLESYNC_SIM_SEED``
(default: drawn, and printed) set the run; a failing seed replays exactly
with ``python -m tests.simulation --seed S --all-steps``."""

from __future__ import annotations

import multiprocessing
import os
import random
import time

import pytest

from tests.simulation.runner import run_schedule

_SCHEDULES = int(os.environ.get("TABLESYNC_SIM_SCHEDULES", "10000"))
_CHUNK = 250


def _run_range(bounds: tuple[int, int]) -> tuple[int, list[str]]:
    start, stop = bounds
    failures: list[str] = []
    for seed in range(start, stop):
        outcome = run_schedule(seed)
        if outcome.violations:
            failures.append(outcome.report(steps=40))
    return stop - start, failures


@pytest.mark.timeout(900)
def test_every_invariant_holds_in_every_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    base = int(os.environ.get("TABLESYNC_SIM_SEED", random.randrange(1, 10**9)))
    chunks = [
        (s, min(s + _CHUNK, base + _SCHEDULES)) for s in range(base, base + _SCHEDULES, _CHUNK)
    ]
    started = time.perf_counter()
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    # A fresh interpreter per worker: nothing of this test process leaks in.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_run_range, chunks)
    ran = sum(n for n, _ in results)
    failures = [f for _, fs in results for f in fs]
    with capsys.disabled():
        print(
            f"\nsimulation: {ran} schedules, {len(failures)} violations, seed {base}"
            f" ({time.perf_counter() - started:.0f} s, {workers} processes)"
        )
    assert ran == _SCHEDULES
    assert not failures, "\n\n".join(failures[:5])
