"""PostgreSQL seen from outside while a bench runs: which statements are active
(sampled from ``pg_stat_activity``, a poor man's profiler that needs no
extension) and how much CPU the backends of each bench database used (from
/proc, so the server's other clients are not counted)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from bench.machine import cpu_seconds

__all__ = ["PgSampler"]

_SPACES = re.compile(r"\s+")
_SELECT_LIST = re.compile(r"^SELECT .+? FROM ", re.IGNORECASE)
_STATEMENT_CHARS = 240


def _normalise(query: str) -> str:
    # The emulators select every column by name: the list says nothing, the
    # table and the WHERE clause say what the statement is for.
    text = _SELECT_LIST.sub("SELECT … FROM ", _SPACES.sub(" ", query).strip())
    return text[:_STATEMENT_CHARS]


@dataclass
class PgSampler:
    """Samples every ``interval_s`` until stopped; ``databases`` maps a database
    name to the label it is reported under."""

    admin_dsn: str
    databases: dict[str, str]
    interval_s: float = 0.1
    samples: int = 0
    active: Counter[tuple[str, str]] = field(default_factory=Counter)
    waits: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_connections: int = 0
    """The most backends the bench's databases held at once."""
    _cpu_first: dict[int, float] = field(default_factory=dict)
    _cpu_last: dict[int, float] = field(default_factory=dict)
    _pid_label: dict[int, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        # Backends already connected count from now, not from when they started.
        for row in await self._activity(conn):
            value = cpu_seconds(row["pid"])
            if value is not None:
                self._cpu_first[row["pid"]] = value
        self._task = asyncio.create_task(self._run(conn))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _activity(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT pid, datname, state, query, wait_event_type, wait_event "
            "FROM pg_stat_activity WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()",
            list(self.databases),
        )
        return rows

    async def _run(self, conn: asyncpg.Connection) -> None:
        try:
            while not self._stop.is_set():
                rows = await self._activity(conn)
                self.max_connections = max(self.max_connections, len(rows))
                for row in rows:
                    label = self.databases[row["datname"]]
                    pid = row["pid"]
                    self._pid_label[pid] = label
                    value = cpu_seconds(pid)
                    if value is not None:
                        self._cpu_last[pid] = value
                    if row["state"] == "active":
                        self.active[(label, _normalise(row["query"] or ""))] += 1
                        if row["wait_event_type"]:
                            self.waits[
                                (label, f"{row['wait_event_type']}:{row['wait_event']}")
                            ] += 1
                self.samples += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            await conn.close()

    def cpu_by_database(self) -> dict[str, float]:
        totals: dict[str, float] = dict.fromkeys(self.databases.values(), 0.0)
        for pid, last in self._cpu_last.items():
            label = self._pid_label[pid]
            totals[label] += last - self._cpu_first.get(pid, 0.0)
        return {k: round(v, 2) for k, v in totals.items()}

    def top_statements(self, limit: int = 12) -> list[dict[str, object]]:
        """The statements seen active most often, as a share of all active samples."""
        total = sum(self.active.values()) or 1
        return [
            {
                "database": label,
                "statement": statement,
                "samples": count,
                "share": round(count / total, 3),
            }
            for (label, statement), count in self.active.most_common(limit)
        ]

    def top_waits(self, limit: int = 8) -> list[dict[str, object]]:
        total = sum(self.active.values()) or 1
        return [
            {"database": label, "wait": wait, "samples": count, "share": round(count / total, 3)}
            for (label, wait), count in self.waits.most_common(limit)
        ]
