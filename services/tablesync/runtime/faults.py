"""Named points where the fault suite may kill a process, as ``kill -9`` would.

Disabled unless ``TABLESYNC_FAULT_POINT`` names a point; then the process
dies abruptly (no cleanup, no flush) the ``TABLESYNC_FAULT_AFTER``-th time
it passes that point. Production never sets them."""

from __future__ import annotations

import os

__all__ = ["configure", "point"]

_armed: dict[str, int] = {}


def configure(point_name: str | None, after: int = 1) -> None:
    _armed.clear()
    if point_name:
        _armed[point_name] = max(1, after)


def point(name: str) -> None:
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        os._exit(137)
