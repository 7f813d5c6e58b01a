"""The suite's processes: each tablesync service and each emulator runs as its
own ``python -m tablesync.cli`` process, so it can be killed like ``kill -9``
and started again.

A process that exits when nobody asked it to is restarted, the way a process
manager would, and the exit is recorded: the figures report it. A process
started with a fault point armed is expected to die there (exit 137); that
exit counts as the fault firing and the process comes back unarmed. A process
can also be frozen (SIGSTOP) and thawed (SIGCONT), as a stalled VM or a long
garbage collection freezes one: it keeps its sockets and wakes up where it was."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Exit", "Proc", "Supervisor"]

FAULT_EXIT = 137
_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
_STOP_GRACE_S = 15.0
_TAIL_LINES = 12


@dataclass(frozen=True)
class Exit:
    """An exit nobody asked for. ``running`` tells a service that was up (it
    had logged that it started) from one that could not start because what it
    needs was down at the time, which a process manager simply retries."""

    name: str
    code: int | None
    at_s: float
    running: bool
    cause: str
    tail: str


_STARTED = ("services_starting", "emulator_started")
_CAUSE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b.*|error: .*)$")


def last_start(path: Path) -> str:
    """The log of the process's latest start."""
    try:
        text = path.read_bytes()[-262_144:].decode(errors="replace")
    except OSError:
        return ""
    return text[text.rfind("--- start ") :]


def exit_of(name: str, code: int | None, at_s: float, path: Path) -> Exit:
    log = last_start(path)
    lines = log.splitlines()
    causes = [line for line in lines if _CAUSE.match(line)]
    return Exit(
        name,
        code,
        at_s,
        running=any(marker in log for marker in _STARTED),
        cause=causes[-1][:300] if causes else "",
        tail="\n".join(lines[-_TAIL_LINES:]),
    )


class Proc:
    """One supervised ``tablesync`` process."""

    def __init__(
        self, supervisor: Supervisor, name: str, args: list[str], env: Mapping[str, str]
    ) -> None:
        self.supervisor = supervisor
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = supervisor.log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.armed: str | None = None
        self.fired = asyncio.Event()
        # Whether the process comes back by itself after dying at its fault point.
        self.restart_after_fault = True
        # Set while the suite itself stops or kills the process.
        self._expecting_exit = False
        self.paused = False
        self._watcher: asyncio.Task[None] | None = None
        self._unexpected_in_a_row = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def started_up(self) -> bool:
        """Running, and past its start-up (what it needs was there): it said so."""
        return self.running and any(m in last_start(self.log_path) for m in _STARTED)

    async def start(self, *, fault_point: str | None = None, fault_after: int = 1) -> None:
        """Starts the process (it must not be running); with ``fault_point`` it
        kills itself at that point on the ``fault_after``-th pass."""
        assert not self.running, f"{self.name} is already running"
        env = dict(self.env)
        if fault_point is not None:
            env["TABLESYNC_FAULT_POINT"] = fault_point
            env["TABLESYNC_FAULT_AFTER"] = str(fault_after)
        self.armed = fault_point
        self._expecting_exit = False
        self.paused = False
        self.starts += 1
        with self.log_path.open("ab") as log:
            note = f"--- start {self.starts}" + (
                f", armed at {fault_point} after {fault_after}" if fault_point else ""
            )
            log.write(f"{note} ---\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tablesync.cli",
                *self.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._watcher = asyncio.create_task(self._watch(self.process))

    async def arm(self, fault_point: str, fault_after: int, *, restart: bool = True) -> None:
        """Restarts the process with a fault point armed (a clean stop first);
        ``restart=False`` leaves it down once it has died there."""
        await self.stop()
        self.fired.clear()
        self.restart_after_fault = restart
        await self.start(fault_point=fault_point, fault_after=fault_after)

    async def disarm(self) -> None:
        if self.armed is not None:
            await self.stop()
            self.armed = None
        if not self.running:
            await self.start()

    def pause(self) -> None:
        """SIGSTOP: the process stops where it is, heartbeats and all."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGSTOP)
                self.paused = True

    def resume(self) -> None:
        """SIGCONT: the frozen process goes on from where it stopped."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def kill9(self) -> None:
        """SIGKILL, as ``kill -9`` does: no cleanup, no flush, no commit."""
        if self.process is not None and self.process.returncode is None:
            self._expecting_exit = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code once the process has ended; None if it still runs."""
        process = self.process
        if process is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(process.wait()), timeout=timeout_s)
        except TimeoutError:
            return None

    async def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM (the services finish their batch and commit), SIGKILL after ``grace_s``."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        self._expecting_exit = True
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        if self.paused:
            # A frozen process only sees its SIGTERM once it runs again.
            self.resume()
        if await self.wait_exit(grace_s) is None:
            self.kill9()
            await self.wait_exit(30.0)

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self.process is not process or self.supervisor.closing:
            return
        if self._expecting_exit:
            return
        if self.armed is not None and code == FAULT_EXIT:
            self.armed = None
            self._unexpected_in_a_row = 0
            if self.restart_after_fault:
                await self.start()
            # Set once the process is back, so whoever waits may act on it again.
            self.fired.set()
            return
        self.supervisor.record_exit(self, code)
        delay = _RESTART_BACKOFF_S[min(self._unexpected_in_a_row, len(_RESTART_BACKOFF_S) - 1)]
        self._unexpected_in_a_row += 1
        await asyncio.sleep(delay)
        if self.process is process and not self.supervisor.closing and not self.running:
            await self.start()

    async def close(self) -> None:
        await self.stop(grace_s=10.0)
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            await self.process.wait()


@dataclass
class Supervisor:
    """Starts, watches and finally stops every process of one run."""

    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    closing: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def add(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        assert name not in self.procs, name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = Proc(self, name, args, env)
        self.procs[name] = proc
        return proc

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    def record_exit(self, proc: Proc, code: int | None) -> None:
        at = time.monotonic() - self.started_at
        self.exits.append(exit_of(proc.name, code, at, proc.log_path))

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))

    async def close(self) -> None:
        """Stops every process, even after a failure; nothing is left running."""
        self.closing = True
        await asyncio.gather(*(p.close() for p in self.procs.values()))
