"""Read-only queries the admin API, the dashboard and the metrics need beyond
the stores: filtered job listings, each mapping's last jobs, and totals over
every job for metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tablesync.adapters.postgres.jobs import JobTotals, _totals
from tablesync.core.plan import COUNTED

__all__ = ["AdminQueries", "DurationHistogram", "LastJobs", "OutcomeTotals"]

_ANY_COUNT = " + ".join(COUNTED)


@dataclass(frozen=True, slots=True)
class LastJobs:
    """A mapping's newest jobs, kept apart by what started them.

    ``started`` is the newest job someone started (a run's step, a replay, a
    record action): its status is that job's outcome. ``continuous`` is the
    newest interval of continuous work that counted something. Continuous jobs
    are created by apply as changes flow, one per direction and interval,
    dated from the interval's start and running until it closes; they also
    count the echoes of a run's own writes. So a continuous job can be newer
    than a run that has just finished, and never stands for its outcome."""

    started: JobTotals | None = None
    continuous: JobTotals | None = None


@dataclass(frozen=True, slots=True)
class OutcomeTotals:
    """Events of one mapping and direction by outcome, over every job ever run."""

    mapping: str
    direction: str
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class DurationHistogram:
    """Durations of finished jobs of one mapping, direction and kind."""

    mapping: str
    direction: str
    kind: str
    count: int
    total_s: float
    buckets: tuple[tuple[float, int], ...]
    """(upper bound in seconds, jobs that took at most that long), cumulative."""


class AdminQueries:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def jobs(
        self,
        *,
        mapping: str | None = None,
        run_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        include_empty_continuous: bool = False,
        limit: int = 50,
        company: str | None = None,
    ) -> list[JobTotals]:
        """Jobs newest first; continuous jobs that counted nothing are left out
        unless asked for, before the limit applies; of one BC company with ``company``."""
        rows = await self._pool.fetch(
            f"""
            SELECT * FROM job_totals
            WHERE ($1::text IS NULL OR mapping = $1)
              AND ($2::uuid IS NULL OR run_id = $2)
              AND ($3::text IS NULL OR kind = $3)
              AND ($4::text IS NULL OR status = $4)
              AND ($5 OR kind <> 'continuous' OR ({_ANY_COUNT}) > 0)
              AND ($7::text IS NULL OR company = $7)
            ORDER BY started_at DESC, mapping, company, direction
            LIMIT $6
            """,
            mapping,
            UUID(run_id) if run_id else None,
            kind,
            status,
            include_empty_continuous,
            limit,
            company,
        )
        return [_totals(r) for r in rows]

    async def last_jobs(self) -> dict[str, LastJobs]:
        """Each mapping's newest started job and, apart, its newest continuous
        job that counted something (see ``LastJobs``)."""
        rows = await self._pool.fetch(
            f"""
            SELECT DISTINCT ON (mapping, kind = 'continuous') * FROM job_totals
            WHERE kind <> 'continuous' OR ({_ANY_COUNT}) > 0
            ORDER BY mapping, kind = 'continuous', started_at DESC, job_id
            """
        )
        started: dict[str, JobTotals] = {}
        continuous: dict[str, JobTotals] = {}
        for r in rows:
            (continuous if r["kind"] == "continuous" else started)[r["mapping"]] = _totals(r)
        return {
            name: LastJobs(started.get(name), continuous.get(name))
            for name in started.keys() | continuous.keys()
        }

    async def outcome_totals(self) -> tuple[OutcomeTotals, ...]:
        sums = ", ".join(f"coalesce(sum(p.{c}), 0)::bigint AS {c}" for c in COUNTED)
        rows = await self._pool.fetch(
            f"""
            SELECT j.mapping, j.direction, {sums}
            FROM job_partitions p JOIN jobs j USING (job_id)
            GROUP BY j.mapping, j.direction
            ORDER BY j.mapping, j.direction
            """
        )
        return tuple(
            OutcomeTotals(r["mapping"], r["direction"], {c: int(r[c]) for c in COUNTED})
            for r in rows
        )

    async def job_durations(self, bounds: Sequence[float]) -> tuple[DurationHistogram, ...]:
        """Finished full and modified jobs (continuous ones last an interval by design)."""
        finished = """
            WITH d AS (
                SELECT mapping, direction, kind,
                       extract(epoch FROM finished_at - started_at)::float8 AS s
                FROM jobs WHERE finished_at IS NOT NULL AND kind <> 'continuous'
            )
        """
        totals = await self._pool.fetch(
            finished + "SELECT mapping, direction, kind, count(*) AS n, "
            "coalesce(sum(s), 0)::float8 AS total FROM d GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        cumulative = await self._pool.fetch(
            finished + "SELECT mapping, direction, kind, b.le, count(*) FILTER (WHERE s <= b.le) "
            "AS n FROM d CROSS JOIN unnest($1::float8[]) AS b(le) GROUP BY 1, 2, 3, 4",
            sorted(bounds),
        )
        per_key: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
        for r in cumulative:
            per_key.setdefault((r["mapping"], r["direction"], r["kind"]), []).append(
                (float(r["le"]), int(r["n"]))
            )
        return tuple(
            DurationHistogram(
                mapping=r["mapping"],
                direction=r["direction"],
                kind=r["kind"],
                count=int(r["n"]),
                total_s=float(r["total"]),
                buckets=tuple(sorted(per_key.get((r["mapping"], r["direction"], r["kind"]), []))),
            )
            for r in totals
        )
