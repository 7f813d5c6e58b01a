"""Sampling the Python processes of a bench with py-spy, and reading its raw
output (one ``frame;frame;… count`` line per distinct stack) into the
functions that cost the most CPU.

py-spy is run without ``--idle``: a sample is taken only while the process is
on the CPU, so shares are shares of that process's CPU time, not of wall time
(an asyncio process waiting on the network is idle, and not sampled)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Child, Processes

__all__ = ["Profile", "PySpy", "parse_raw", "py_spy_path"]

RATE = 100
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*)\)$")


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    """``function (path/to/file.py)`` → ``path/to/file.py:function``, shortened to
    the package part."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "services/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['func']}"


def _own(name: str) -> bool:
    """A frame of the project's code below the command line (the entry frames
    are in every sample and say nothing)."""
    return name.startswith("tablesync/") and not name.startswith("tablesync/cli/")


@dataclass
class Profile:
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)
    """Samples with the function anywhere on the stack, tablesync's own functions only."""

    def top(self, counts: Counter[str], limit: int) -> list[dict[str, object]]:
        total = self.samples or 1
        return [
            {"function": name, "samples": n, "share": round(n / total, 3)}
            for name, n in counts.most_common(limit)
        ]

    def as_dict(self, limit: int = 20) -> dict[str, object]:
        return {
            "samples": self.samples,
            # Samples are taken RATE times a second while the process is on a CPU.
            "cpu_seconds_sampled": round(self.samples / RATE, 1),
            "top_self": self.top(self.self_counts, limit),
            "top_inclusive_tablesync": self.top(self.total_counts, limit),
        }


def parse_raw(text: str) -> Profile:
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # py-spy writes the outermost frame first; the first entry may name the thread.
        frames = [_frame_name(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        profile.samples += count
        profile.self_counts[frames[-1]] += count
        for name in {f for f in frames if _own(f)}:
            profile.total_counts[name] += count
    return profile


@dataclass
class PySpy:
    """One ``py-spy record`` per process, stopped (and written) on ``stop``."""

    procs: Processes
    directory: Path
    recorders: dict[str, tuple[Child, Path]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """Why a process has no profile (py-spy missing, not allowed to attach…)."""

    async def attach(self, name: str, pid: int) -> None:
        binary = py_spy_path()
        if binary is None:
            self.errors[name] = "py-spy is not installed (pip install py-spy)"
            return
        out = self.directory / f"{name}.pyspy.txt"
        child = await self.procs.spawn(
            f"py-spy-{name}",
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--nolineno",
                "--rate",
                str(RATE),
                "--nonblocking",
                "--output",
                str(out),
            ],
            env={"PATH": "/usr/bin:/bin"},
            log=self.directory / f"py-spy-{name}.log",
            tier=2,
        )
        self.recorders[name] = (child, out)

    async def stop(self) -> dict[str, Profile]:
        for child, _ in self.recorders.values():
            child.signal(signal.SIGINT)
        profiles: dict[str, Profile] = {}
        for name, (child, out) in self.recorders.items():
            try:
                await asyncio.wait_for(child.process.wait(), 60)
            except TimeoutError:
                await self.procs.stop(child)
            if out.exists():
                profiles[name] = parse_raw(out.read_text(errors="replace"))
            else:
                # Typically ptrace refused: py-spy needs root or CAP_SYS_PTRACE here.
                self.errors[name] = (
                    child.tail(5) or f"py-spy exited with {child.process.returncode}"
                )
        self.recorders.clear()
        return profiles
