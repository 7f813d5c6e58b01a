"""Request counters the control API reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    total: int = 0
    throttled: int = 0
    """429 answers sent, by the limiter or by an injected fault."""
    faults: int = 0
    unauthorized: int = 0
    execution_s: float = 0.0
    """Under the real limits: the seconds requests held their slot, added up."""
    records_written: int = 0
    """Under the real limits: the records that writes charged."""
    queued: int = 0
    """Under the real limits: requests that waited for a slot (BC's queue)."""
    by_method: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)

    def reset(self) -> None:
        self.total = self.throttled = self.faults = self.unauthorized = 0
        self.execution_s = 0.0
        self.records_written = self.queued = 0
        self.by_method.clear()
        self.by_status.clear()

    def snapshot(self) -> dict[str, object]:
        return {
            "total": self.total,
            "throttled": self.throttled,
            "faults": self.faults,
            "unauthorized": self.unauthorized,
            "by_method": dict(self.by_method),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
        }

    def real_snapshot(self) -> dict[str, object]:
        return {
            "execution_s": round(self.execution_s, 3),
            "records_written": self.records_written,
            "queued": self.queued,
        }
