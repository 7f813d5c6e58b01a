"""The command line of ``python -m tablesync.localinfra up|down|status|purge [--json]``.

Exit codes: 0 done (for ``status``: both servers usable), 1 not usable or
failed, 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from tablesync.errors import InfraError
from tablesync.localinfra import control
from tablesync.localinfra.model import InfraStatus, ServerState, ServerStatus
from tablesync.logging import configure_logging
from tablesync.settings import Settings

__all__ = ["main", "summary_lines"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    started = time.monotonic()
    try:
        result = _run(args, settings)
    except InfraError as exc:
        _print_error(str(exc), as_json=args.json)
        return 1
    elapsed = time.monotonic() - started
    if args.json:
        payload = {"command": args.command, "elapsed_s": round(elapsed, 3)}
        if result is not None:
            payload.update(result.to_dict())
        print(json.dumps(payload, indent=2))
    else:
        _print_summary(args.command, result, elapsed)
    return 1 if args.command == "status" and result is not None and not result.usable else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tablesync.localinfra",
        description="Manage the local Kafka and PostgreSQL servers of tablesync.",
    )
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "purge"),
        help="up: start and wait until ready; down: stop; status: report; "
        "purge: stop and delete the local data",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument(
        "--kafka-controller-port",
        type=int,
        default=None,
        help="KRaft controller port for `up` (default: the broker port + 1)",
    )
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> InfraStatus | None:
    if args.command == "up":
        return control.up(settings, kafka_controller_port=args.kafka_controller_port)
    if args.command == "status":
        return control.status(settings)
    if args.command == "purge":
        control.purge(settings)
        return None
    return control.shutdown(settings)


def _print_error(message: str, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": message}, indent=2))
    else:
        print(f"error: {message}", file=sys.stderr)


def _print_summary(command: str, result: InfraStatus | None, elapsed: float) -> None:
    for line in summary_lines(command, result, elapsed):
        print(line)


def summary_lines(command: str, result: InfraStatus | None, elapsed: float) -> list[str]:
    """The human report of ``command``, one line per server and a closing line."""
    if result is None:
        return [f"local Kafka and PostgreSQL stopped and their data deleted in {elapsed:.1f}s"]
    describe = _DESCRIBERS[command]
    lines = [describe(server) for server in result.servers]
    if command == "status":
        lines.append("both usable" if result.usable else "not usable")
    else:
        lines.append(f"{command} done in {elapsed:.1f}s")
    return lines


def _describe_up(server: ServerStatus) -> str:
    took = f"in {server.elapsed_s or 0.0:.1f}s"
    if server.state is ServerState.EXTERNAL:
        return (
            f"{server.name} ready on {server.address} {took} (external, not managed by tablesync)"
        )
    return f"{server.name} ready on {server.address} {took} ({server.detail}, pid {server.pid})"


def _describe_status(server: ServerStatus) -> str:
    if server.state is ServerState.RUNNING:
        health = "" if server.ready else f", {server.detail or 'not answering'}"
        return f"{server.name}: running on {server.address} (managed, pid {server.pid}{health})"
    if server.state is ServerState.EXTERNAL:
        return f"{server.name}: external on {server.address} (not managed by tablesync)"
    if server.state is ServerState.PORT_TAKEN:
        return f"{server.name}: unusable: {server.detail}"
    suffix = f": {server.detail}" if server.detail else ""
    return f"{server.name}: stopped ({server.address}{suffix})"


def _describe_down(server: ServerStatus) -> str:
    if server.state is ServerState.STOPPED and server.pid is not None:
        return f"{server.name}: stopped pid {server.pid} in {server.elapsed_s or 0.0:.1f}s"
    if server.state is ServerState.STOPPED:
        return f"{server.name}: was not running"
    if server.state is ServerState.EXTERNAL:
        return f"{server.name}: external on {server.address}, left running"
    return _describe_status(server)


_DESCRIBERS: dict[str, Callable[[ServerStatus], str]] = {
    "up": _describe_up,
    "status": _describe_status,
    "down": _describe_down,
}
