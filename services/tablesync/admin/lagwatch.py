"""Consumer lag for the admin server: read on demand (briefly cached, so the
API, the dashboard and a scrape in the same second agree and the broker is
asked once), and sampled per mapping over the last hour for the dashboard's
chart. The history lives in memory: a restarted server starts a new one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from tablesync.adapters.kafka import Topics
from tablesync.adapters.kafka.lag import LagReader, LagReport
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.admin.consumers import consumer_groups
from tablesync.ports.state import Mappings

__all__ = ["LagMonitor", "LagSample"]

log = structlog.get_logger()

HISTORY_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class LagSample:
    at: datetime
    by_mapping: dict[str, int]


class LagMonitor:
    def __init__(
        self,
        reader: LagReader,
        pool: Any,
        topics: Topics,
        *,
        cache_s: float = 1.0,
        sample_every_s: float = 15.0,
        read_timeout_s: float = 5.0,
        mappings: Mappings | None = None,
    ) -> None:
        self.reader = reader
        self.topics = topics
        self.sample_every_s = sample_every_s
        # The runtime's own store: it knows the custom tables the mappings name.
        self._mappings: Mappings = mappings if mappings is not None else MappingStore(pool)
        self._cache_s = cache_s
        self._timeout_s = read_timeout_s
        self._cached: tuple[float, LagReport] | None = None
        self._lock = asyncio.Lock()
        self._history: deque[LagSample] = deque(
            maxlen=int(HISTORY_WINDOW_S / max(sample_every_s, 0.1)) + 1
        )

    async def report(self) -> LagReport:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_s:
                return self._cached[1]
            groups = consumer_groups(self.topics, await self._mappings.load())
            # A broker that does not answer fails the read (503, source down)
            # before a scraper or the dashboard gives up on the request.
            report = await asyncio.wait_for(self.reader.read(groups), self._timeout_s)
            self._cached = (time.monotonic(), report)
            return report

    async def deadletter_messages(self) -> int:
        counts = await asyncio.wait_for(
            self.reader.message_counts([self.topics.deadletter]), self._timeout_s
        )
        return counts.get(self.topics.deadletter, 0)

    def history(self, minutes: int) -> list[LagSample]:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        return [s for s in self._history if s.at >= since]

    async def sample(self) -> LagSample:
        report = await self.report()
        sample = LagSample(report.read_at, {m.mapping: m.lag for m in report.mappings()})
        self._history.append(sample)
        return sample

    async def run(self, stop: asyncio.Event) -> None:
        """Samples until ``stop``; a failed read is logged and tried at the next tick."""
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:
                log.warning("lag_sample_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.sample_every_s)
            except TimeoutError:
                continue
