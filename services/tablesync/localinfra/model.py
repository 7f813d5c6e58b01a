"""What the local infrastructure reports about its two servers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["InfraStatus", "ServerState", "ServerStatus"]


class ServerState(StrEnum):
    RUNNING = "running"
    """Started and owned by tablesync (pid file alive)."""
    EXTERNAL = "external"
    """A real server tablesync does not manage; used as is, never stopped."""
    STOPPED = "stopped"
    """Nothing answers on the configured address."""
    PORT_TAKEN = "port-taken"
    """Something that is not a usable server of the right kind holds the port."""


@dataclass(frozen=True)
class ServerStatus:
    name: str
    state: ServerState
    address: str
    ready: bool = False
    pid: int | None = None
    elapsed_s: float | None = None
    detail: str = ""
    log_path: Path | None = None
    data_dir: Path | None = None

    @property
    def usable(self) -> bool:
        return self.ready and self.state in (ServerState.RUNNING, ServerState.EXTERNAL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "address": self.address,
            "ready": self.ready,
            "usable": self.usable,
            "pid": self.pid,
            "elapsed_s": None if self.elapsed_s is None else round(self.elapsed_s, 3),
            "detail": self.detail,
            "log_path": None if self.log_path is None else str(self.log_path),
            "data_dir": None if self.data_dir is None else str(self.data_dir),
        }


@dataclass(frozen=True)
class InfraStatus:
    kafka: ServerStatus
    postgres: ServerStatus

    @property
    def usable(self) -> bool:
        return self.kafka.usable and self.postgres.usable

    @property
    def servers(self) -> tuple[ServerStatus, ServerStatus]:
        return (self.kafka, self.postgres)

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": self.usable,
            "kafka": self.kafka.to_dict(),
            "postgres": self.postgres.to_dict(),
        }
