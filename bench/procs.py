"""The processes a bench starts: each in its own session, so that stopping one
stops everything it started, and each told by the kernel to stop when the bench
process dies, so not even a killed bench leaves servers behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["Child", "Processes", "python_argv"]

_PR_SET_PDEATHSIG = 1
_STOP_TIMEOUT_S = 30.0


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", module, *args]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log: Path
    tier: int = 1

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def signal(self, sig: int) -> None:
        """``sig`` to the child's whole process group."""
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    async def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful stop for the services and the emulators), SIGKILL
        when that does not end it in time; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            return await self.process.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Processes:
    """``async with Processes() as procs:`` — every child is stopped on exit."""

    children: list[Child] = field(default_factory=list)

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        tier: int = 1,
        cwd: Path | None = None,
    ) -> Child:
        """Starts ``argv``; ``tier`` orders the stop: higher tiers stop first
        (services before the emulators and the servers they talk to)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, process, log, tier)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        """Fails naming the first child that exited on its own, with its last lines."""
        for child in self.children:
            if not child.running:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}:\n{child.tail()}"
                )

    async def stop(self, child: Child) -> int:
        code = await child.stop()
        if child in self.children:
            self.children.remove(child)
        return code

    async def stop_all(self) -> None:
        children, self.children = self.children, []
        for tier in sorted({c.tier for c in children}, reverse=True):
            await asyncio.gather(
                *(c.stop() for c in children if c.tier == tier), return_exceptions=True
            )

    async def __aenter__(self) -> Processes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_all()
