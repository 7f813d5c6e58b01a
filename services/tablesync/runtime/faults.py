"""Named points where the fault suite may kill a process, as ``kill -9`` would.

Disabled unless ``TABLESYNC_FAULT_POINT`` names a point, optionally narrowed
with ``:<qualifier>`` (``apply.after_write:CUSTOMER``); then the process
dies abruptly (no cleanup, no flush) the ``TABLESYNC_FAULT_AFTER``-th time it
passes that point. Production never sets them."""

from __future__ import annotations

import os

__all__ = ["POINTS", "configure", "point"]

POINTS = (
    "apply.after_write",  # destination written, couplings and positions not yet committed
    "apply.before_commit",  # a batch decided and written, nothing of it committed
    "apply.after_commit",  # effects committed, Kafka offsets not yet
    "capture.before_checkpoint",  # events acknowledged, checkpoint not yet moved
    "coordinator.after_snapshot_request",  # snapshot asked for, not yet marked as asked
)
"""Every point, qualified by the mapping (apply, coordinator) or table (capture)."""

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
