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
    by_method: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)

    def reset(self) -> None:
        self.total = self.throttled = self.faults = self.unauthorized = 0
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
