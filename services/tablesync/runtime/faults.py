"""Named points where the fault suite may kill a process, as ``kill -9`` would.

Disabled unless ``TABLESYNC_FAULT_POINT`` names a point, optionally narrowed
with ``:<qualifier>`` (``apply.before_commit:CUSTOMER``); then the process
dies abruptly (no cleanup, no flush) the ``TABLESYNC_FAULT_AFTER``-th time it
passes that point. Production never sets them."""

from __future__ import annotations

import os

__all__ = ["configure", "point"]

_armed: dict[str, int] = {}


def configure(point_name: str | None, after: int = 1) -> None:
    _armed.clear()
    if point_name:
        _armed[point_name] = max(1, after)


def point(name: str, qualifier: str | None = None) -> None:
    if not _armed:
        return
    for key in (name, f"{name}:{qualifier}" if qualifier else None):
        if key is not None and key in _armed:
            _armed[key] -= 1
            if _armed[key] <= 0:
                os._exit(137)
