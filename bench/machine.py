"""What a result is worth without the machine it came from: CPUs, memory, versions,
and how busy the machine was with other work while a bench ran."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tablesync.localinfra.kafka import kafka_version
from tablesync.localinfra.paths import kafka_files
from tablesync.settings import Settings

__all__ = [
    "CpuMeter",
    "LoadSample",
    "ProcessCpu",
    "cpu_seconds",
    "git_state",
    "listening_pid",
    "machine_info",
    "memory_kib",
    "versions",
]

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def machine_info() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mib": _memory_total_mib(),
        "kernel": platform.release(),
    }


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def git_state() -> dict[str, object]:
    """The commit the engine runs from, and whether tracked files differ from it."""
    return {
        "tablesync_git_sha": _git("rev-parse", "HEAD") or "unknown",
        "tablesync_worktree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


async def versions(settings: Settings) -> dict[str, object]:
    conn = await asyncpg.connect(settings.database_dsn())
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "python": platform.python_version(),
        # The broker does not report its version over the protocol; this is the
        # version the local infrastructure runs (an external broker may differ).
        "kafka": kafka_version(kafka_files() / "pom.xml"),
        "postgres": postgres,
        **git_state(),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of stat(5); the split above drops the first two.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def listening_pid(port: int) -> int | None:
    """The process of this machine listening on TCP ``port``; None when none
    is (or its sockets cannot be read: another user's process, without root)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN (proc(5)).
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of ``pid``, in KiB."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def _busy_and_total_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True, slots=True)
class LoadSample:
    at: float
    load1: float
    load5: float


@dataclass
class CpuMeter:
    """Machine-wide CPU use between ``start`` and ``stop``, and the load average."""

    started: float = 0.0
    _busy0: int = 0
    _total0: int = 0
    load: list[LoadSample] = field(default_factory=list)
    busy_cpus: float = 0.0
    """Average number of busy CPUs (0..cpu count) over the interval."""
    seconds: float = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self._busy0, self._total0 = _busy_and_total_ticks()
        self.sample_load()

    def sample_load(self) -> None:
        one, five, _ = os.getloadavg()
        self.load.append(LoadSample(time.monotonic(), one, five))

    def stop(self) -> None:
        self.sample_load()
        busy, total = _busy_and_total_ticks()
        self.seconds = time.monotonic() - self.started
        cpus = os.cpu_count() or 1
        ticks = max(total - self._total0, 1)
        self.busy_cpus = (busy - self._busy0) / ticks * cpus

    def as_dict(self) -> dict[str, object]:
        return {
            "load1_start": round(self.load[0].load1, 2) if self.load else None,
            "load1_end": round(self.load[-1].load1, 2) if self.load else None,
            "load5_end": round(self.load[-1].load5, 2) if self.load else None,
            "busy_cpus": round(self.busy_cpus, 2),
        }


@dataclass
class ProcessCpu:
    """CPU seconds of named processes over an interval (processes that exit
    during the interval keep their last reading)."""

    pids: dict[str, int] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        value = cpu_seconds(pid)
        if value is not None:
            self.first[name] = value
            self.last[name] = value

    def sample(self) -> None:
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self.last[name] = value

    def seconds(self) -> dict[str, float]:
        return {
            name: round(self.last[name] - self.first.get(name, 0.0), 2)
            for name in self.pids
            if name in self.last
        }
