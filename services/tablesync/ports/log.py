"""What the services need from the event log (Kafka), as small Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["Captured", "LogWindow"]


@dataclass(frozen=True, slots=True, order=True)
class Captured:
    """One record read back from a topic; ordered by the time it was written."""

    timestamp_ms: int
    topic: str
    partition: int
    offset: int
    value: bytes


class LogWindow(Protocol):
    async def read(
        self, sources: Sequence[str], since: datetime, until: datetime | None
    ) -> list[Captured]:
        """Every record of the ``sources`` topics written in [since, until),
        merged across partitions in time order (within a partition, by offset)."""
        ...
