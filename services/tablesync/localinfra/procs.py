"""Processes of the managed servers: start detached, find, stop, and read their logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tablesync.errors import InfraError

__all__ = [
    "cmdline",
    "exit_code",
    "log_tail",
    "pid_alive",
    "primary_group",
    "read_pid_file",
    "run_tool",
    "send_signal",
    "signal_group",
    "spawn_detached",
    "terminate_group",
    "wait_gone",
    "write_pid_file",
]

_TAIL_BYTES = 16_384

# Exit statuses of our own children that pid_alive reaped, kept for error messages.
_reaped: dict[int, int] = {}


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead and are reaped when ours)."""
    _reap_if_child(pid)
    if pid in _reaped:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def exit_code(pid: int) -> int | None:
    """The exit code of a child of this process that has ended, when known."""
    status = _reaped.get(pid)
    return None if status is None else os.waitstatus_to_exitcode(status)


def _reap_if_child(pid: int) -> None:
    # The servers outlive the command that starts them, but within one process
    # (tests, `up` followed by `down`) they are our children and would linger
    # as zombies that `kill -0` still finds.
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if reaped == pid:
        _reaped[pid] = status


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may hold spaces.
    return stat.rpartition(")")[2].split()[0] == "Z"


def cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces, or "" when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def spawn_detached(argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> int:
    """Start ``argv`` in its own session with output appended to ``log_path``; its pid.

    posix_spawn rather than Popen: the server outlives this process, and a Popen
    object would warn about a still-running child when it is collected.
    """
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        return os.posix_spawn(
            argv[0],
            list(argv),
            dict(env),
            file_actions=file_actions,
            setsid=True,
            # Python ignores SIGPIPE and SIGXFSZ; a child would inherit that.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as exc:
        raise InfraError(f"could not start {argv[0]}: {exc}") from exc


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (its session), else to ``pid``."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        send_signal(pid, sig)


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


async def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has ended; whether it did within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pid_alive(pid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def terminate_group(pid: int, grace_s: float) -> None:
    """SIGTERM the process group of ``pid``, SIGKILL it when ``grace_s`` runs out."""
    signal_group(pid, signal.SIGTERM)
    if await wait_gone(pid, grace_s):
        return
    signal_group(pid, signal.SIGKILL)
    if not await wait_gone(pid, 10.0):
        raise InfraError(f"process {pid} survived SIGKILL")


def log_tail(path: Path | None, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, indented, for error messages."""
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _TAIL_BYTES))
            text = log.read().decode(errors="replace")
    except OSError:
        return f"\n(no log at {path})"
    tail = text.splitlines()[-lines:]
    body = "\n".join(f"    {line}" for line in tail)
    return f"\nlast lines of {path}:\n{body}"


def run_tool(
    argv: Sequence[str],
    *,
    timeout_s: float,
    user: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived tool to completion, capturing its output."""
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=cwd,
            env=None if env is None else dict(env),
            user=user,
            group=None if user is None else primary_group(user),
            extra_groups=None if user is None else [],
        )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{argv[0]} did not finish within {timeout_s:.0f}s") from exc
    except OSError as exc:
        raise InfraError(f"could not run {argv[0]}: {exc}") from exc


def primary_group(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        raise InfraError(f"there is no user {user!r} on this machine") from None
