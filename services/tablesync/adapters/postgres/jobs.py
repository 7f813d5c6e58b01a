"""Runs, jobs, their per-partition counters, error rows and record log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from tablesync.core.effects import LogEntry
from tablesync.core.events import Side
from tablesync.core.plan import COUNTED
from tablesync.core.stored import KEEP_ANSWER, JobError, JobParams, JobTotals, RunRow
from tablesync.errors import AlreadyRunning
from tablesync.ports.state import PRUNE_BATCH, Pruned

__all__ = ["JobError", "JobParams", "JobStore", "JobTotals", "RunRow"]

# A job that ended before $1 and belongs to no run still open. The bound on
# started_at (never after finished_at) lets the scan use jobs_started.
_PRUNABLE = """
    j.status IN ('finished', 'failed')
    AND j.started_at < $1
    AND coalesce(j.finished_at, j.started_at) < $1
    AND NOT EXISTS (
        SELECT 1 FROM runs r
        WHERE r.run_id = j.run_id AND r.status IN ('requested', 'running')
    )
"""


def _totals(r: asyncpg.Record) -> JobTotals:
    return JobTotals(
        job_id=str(r["job_id"]),
        run_id=str(r["run_id"]) if r["run_id"] else None,
        mapping=r["mapping"],
        direction=r["direction"],
        kind=r["kind"],
        type=r["type"],
        status=r["status"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        partitions=r["partitions"],
        partitions_finished=r["partitions_finished"],
        message=r["message"],
        counts={c: int(r[c]) for c in COUNTED},
        company=r["company"],
    )


def _run(r: asyncpg.Record) -> RunRow:
    return RunRow(
        run_id=str(r["run_id"]),
        kind=r["kind"],
        status=r["status"],
        mappings=list(r["mappings"]),
        options=dict(r["options"]),
        requested_by=r["requested_by"],
        requested_at=r["requested_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        message=r["message"],
        company=r["company"],
    )


def _affected(status: str) -> int:
    """The row count of a command status such as ``DELETE 12``."""
    return int(status.rsplit(maxsplit=1)[-1])


class JobStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    # Runs

    async def request_run(
        self,
        run_id: str,
        kind: str,
        mappings: Sequence[str],
        options: dict[str, Any],
        requested_by: str,
        company: str | None = None,
    ) -> None:
        """Records a requested run; a second full synchronization is refused here."""
        try:
            await self._pool.execute(
                "INSERT INTO runs (run_id, kind, status, mappings, options, requested_by, "
                "company) VALUES ($1, $2, 'requested', $3, $4, $5, $6)",
                UUID(run_id),
                kind,
                list(mappings),
                options,
                requested_by,
                company,
            )
        except asyncpg.UniqueViolationError:
            running = await self._pool.fetchval(
                "SELECT run_id::text FROM runs WHERE kind IN ('full', 'coupling') "
                "AND status IN ('requested', 'running')"
            )
            raise AlreadyRunning(running) from None

    async def run(self, run_id: str) -> RunRow | None:
        row = await self._pool.fetchrow("SELECT * FROM runs WHERE run_id = $1", UUID(run_id))
        return _run(row) if row else None

    async def runs(self, limit: int = 20) -> list[RunRow]:
        rows = await self._pool.fetch(
            "SELECT * FROM runs ORDER BY requested_at DESC LIMIT $1", limit
        )
        return [_run(r) for r in rows]

    async def start_run(self, run_id: str) -> None:
        await self._pool.execute(
            "UPDATE runs SET status = 'running', started_at = coalesce(started_at, now()) "
            "WHERE run_id = $1 AND status IN ('requested', 'running')",
            UUID(run_id),
        )

    async def finish_run(self, run_id: str, status: str, message: str = "") -> None:
        await self._pool.execute(
            "UPDATE runs SET status = $2, finished_at = now(), message = $3 "
            "WHERE run_id = $1 AND status IN ('requested', 'running')",
            UUID(run_id),
            status,
            message,
        )

    async def cancel_run(self, run_id: str, message: str) -> bool:
        done = await self._pool.fetchval(
            "UPDATE runs SET status = 'cancelled', finished_at = now(), message = $2 "
            "WHERE run_id = $1 AND status IN ('requested', 'running') RETURNING true",
            UUID(run_id),
            message,
        )
        return bool(done)

    async def release_stale_runs(self, lease: str, after_s: float, message: str) -> list[str]:
        rows = await self._pool.fetch(
            "UPDATE runs SET status = 'cancelled', finished_at = now(), message = $3 "
            "WHERE status IN ('requested', 'running') "
            "AND requested_at <= now() - make_interval(secs => $2) "
            "AND NOT EXISTS (SELECT 1 FROM singleton_leases WHERE name = $1 "
            "AND expires_at > now() - make_interval(secs => $2)) "
            "RETURNING run_id::text",
            lease,
            after_s,
            message,
        )
        return sorted(r["run_id"] for r in rows)

    async def ask_run(self, run_id: str, question: str) -> bool:
        done = await self._pool.fetchval(
            "UPDATE runs SET options = options || "
            "jsonb_build_object('question', $2::text, 'asked_at', now()) "
            "WHERE run_id = $1 AND status = 'running' RETURNING true",
            UUID(run_id),
            question,
        )
        return bool(done)

    async def answer_run(self, run_id: str, keep: bool) -> bool:
        # One statement: of two answers at once only the first is stored.
        done = await self._pool.fetchval(
            "UPDATE runs SET options = options || "
            "jsonb_build_object($2::text, $3::boolean, 'answered_at', now()) "
            "WHERE run_id = $1 AND status = 'running' AND options ? 'question' "
            "AND NOT options ? $2 RETURNING true",
            UUID(run_id),
            KEEP_ANSWER,
            keep,
        )
        return bool(done)

    # Jobs

    async def create_job(
        self,
        job_id: str,
        *,
        run_id: str | None,
        mapping: str,
        direction: str,
        kind: str,
        job_type: str = "synchronization",
        ignore_only_coupled: bool = False,
        source_topic: str | None = None,
        partitions: int | None = None,
        status: str = "running",
        unconditional: bool = False,
        create_unmatched: bool = False,
        sync_after: bool = False,
        company: str = "",
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO jobs (job_id, run_id, mapping, direction, kind, type, status,
                              ignore_only_coupled, source_topic, partitions, unconditional,
                              create_unmatched, sync_after, company)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (job_id) DO NOTHING
            """,
            UUID(job_id),
            UUID(run_id) if run_id else None,
            mapping,
            direction,
            kind,
            job_type,
            status,
            ignore_only_coupled,
            source_topic,
            partitions,
            unconditional,
            create_unmatched,
            sync_after,
            company,
        )

    async def continuous_job(
        self,
        job_id: str,
        mapping: str,
        direction: str,
        interval_start: datetime,
        *,
        company: str = "",
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO jobs (job_id, mapping, direction, kind, status, interval_start, started_at,
                              company)
            VALUES ($1, $2, $3, 'continuous', 'running', $4, $4, $5)
            ON CONFLICT DO NOTHING
            """,
            UUID(job_id),
            mapping,
            direction,
            interval_start,
            company,
        )

    async def job_params(self, job_id: str) -> JobParams | None:
        r = await self._pool.fetchrow(
            "SELECT job_id::text AS job_id, mapping, direction, kind, ignore_only_coupled, "
            "status, unconditional, create_unmatched, sync_after, company "
            "FROM jobs WHERE job_id = $1",
            UUID(job_id),
        )
        if r is None:
            return None
        return JobParams(
            r["job_id"],
            r["mapping"],
            r["direction"],
            r["kind"],
            r["ignore_only_coupled"],
            r["status"],
            r["unconditional"],
            r["create_unmatched"],
            r["sync_after"],
            r["company"],
        )

    async def partition_counts(self, job_id: str, topic: str, partition: int) -> dict[str, int]:
        row = await self._pool.fetchrow(
            f"SELECT {', '.join(COUNTED)} FROM job_partitions "
            "WHERE job_id = $1 AND topic = $2 AND partition = $3",
            UUID(job_id),
            topic,
            partition,
        )
        return {k: int(v) for k, v in dict(row).items()} if row else {}

    async def synced_until(self, mapping: str, direction: str) -> datetime | None:
        value: datetime | None = await self._pool.fetchval(
            "SELECT synced_until FROM sync_watermarks WHERE mapping = $1 AND direction = $2",
            mapping,
            direction,
        )
        return value

    async def set_synced_until(self, mapping: str, direction: str, until: datetime) -> None:
        await self._pool.execute(
            """
            INSERT INTO sync_watermarks (mapping, direction, synced_until)
            VALUES ($1, $2, $3)
            ON CONFLICT (mapping, direction) DO UPDATE SET synced_until = EXCLUDED.synced_until
            """,
            mapping,
            direction,
            until,
        )

    async def snapshot_requested(self, job_id: str) -> bool:
        value = await self._pool.fetchval(
            "SELECT snapshot_requested FROM jobs WHERE job_id = $1", UUID(job_id)
        )
        return bool(value)

    async def mark_snapshot_requested(self, job_id: str) -> None:
        await self._pool.execute(
            "UPDATE jobs SET snapshot_requested = true WHERE job_id = $1", UUID(job_id)
        )

    async def totals(self, job_id: str) -> JobTotals | None:
        row = await self._pool.fetchrow("SELECT * FROM job_totals WHERE job_id = $1", UUID(job_id))
        return _totals(row) if row else None

    async def listing(
        self,
        *,
        run_id: str | None = None,
        mapping: str | None = None,
        include_empty_continuous: bool = False,
        limit: int = 50,
        company: str | None = None,
    ) -> list[JobTotals]:
        rows = await self._pool.fetch(
            """
            SELECT * FROM job_totals
            WHERE ($1::uuid IS NULL OR run_id = $1)
              AND ($2::text IS NULL OR mapping = $2)
              AND ($4::text IS NULL OR company = $4)
            ORDER BY started_at DESC, mapping, company, direction
            LIMIT $3
            """,
            UUID(run_id) if run_id else None,
            mapping,
            limit,
            company,
        )
        jobs = [_totals(r) for r in rows]
        if not include_empty_continuous:
            jobs = [j for j in jobs if j.kind != "continuous" or any(j.counts.values())]
        return jobs

    async def finish_job(self, job_id: str, status: str = "finished", message: str = "") -> None:
        await self._pool.execute(
            "UPDATE jobs SET status = $2, finished_at = coalesce(finished_at, now()), "
            "message = CASE WHEN $3 = '' THEN message ELSE $3 END WHERE job_id = $1",
            UUID(job_id),
            status,
            message,
        )

    async def close_continuous_jobs(self, interval: timedelta) -> int:
        result = await self._pool.execute(
            "UPDATE jobs SET status = 'finished', finished_at = interval_start + $1 "
            "WHERE kind = 'continuous' AND status = 'running' AND interval_start + $1 < now()",
            interval,
        )
        return int(result.split()[-1])

    async def prune(self, before: datetime, *, batch: int = PRUNE_BATCH) -> Pruned:
        jobs = errors = runs = logged = 0
        # Keyset over (started_at, job_id): a job found but not deleted (it
        # changed in between) is never looked at again by this prune.
        after: tuple[datetime, UUID] | None = None
        while True:
            rows = await self._pool.fetch(
                f"""
                SELECT j.job_id, j.started_at FROM jobs j
                WHERE {_PRUNABLE}
                  AND ($3::timestamptz IS NULL OR (j.started_at, j.job_id) > ($3, $4::uuid))
                ORDER BY j.started_at, j.job_id
                LIMIT $2
                """,
                before,
                batch,
                after[0] if after else None,
                after[1] if after else None,
            )
            if not rows:
                break
            after = (rows[-1]["started_at"], rows[-1]["job_id"])
            ids = [r["job_id"] for r in rows]
            errors += await self._delete_batched(
                "DELETE FROM job_errors WHERE id IN "
                "(SELECT id FROM job_errors WHERE job_id = ANY($1::uuid[]) LIMIT $2)",
                ids,
                batch,
            )
            logged += await self._delete_batched(
                "DELETE FROM record_log WHERE id IN "
                "(SELECT id FROM record_log WHERE job_id = ANY($1::uuid[]) LIMIT $2)",
                ids,
                batch,
            )
            await self._delete_batched(
                "DELETE FROM job_partitions WHERE (job_id, topic, partition) IN "
                "(SELECT job_id, topic, partition FROM job_partitions "
                "WHERE job_id = ANY($1::uuid[]) LIMIT $2)",
                ids,
                batch,
            )
            # Checked again: the cascade takes what was committed meanwhile.
            done = await self._pool.execute(
                f"DELETE FROM jobs j WHERE j.job_id = ANY($2::uuid[]) AND {_PRUNABLE}",
                before,
                ids,
            )
            jobs += _affected(done)
            if len(rows) < batch:
                break
        while True:
            done = await self._pool.execute(
                """
                DELETE FROM runs WHERE run_id IN (
                    SELECT r.run_id FROM runs r
                    WHERE r.status NOT IN ('requested', 'running')
                      AND coalesce(r.finished_at, r.requested_at) < $1
                      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.run_id)
                    LIMIT $2
                )
                """,
                before,
                batch,
            )
            runs += _affected(done)
            if _affected(done) < batch:
                break
        return Pruned(jobs=jobs, errors=errors, runs=runs, record_log=logged)

    async def _delete_batched(self, statement: str, ids: list[UUID], batch: int) -> int:
        deleted = 0
        while True:
            n = _affected(await self._pool.execute(statement, ids, batch))
            deleted += n
            if n < batch:
                return deleted

    async def record_log(
        self, mapping: str, side: Side, record_id: str, *, limit: int = 50
    ) -> list[LogEntry]:
        rows = await self._pool.fetch(
            """
            SELECT * FROM record_log
            WHERE mapping = $1 AND ((source_side = $2 AND source_id = $3)
                                    OR (source_side <> $2 AND counterpart_id = $3))
            ORDER BY logged_at DESC, id DESC
            LIMIT $4
            """,
            mapping,
            side,
            record_id.lower(),
            limit,
        )
        return [
            LogEntry(
                mapping=r["mapping"],
                company=r["company"],
                source_side=r["source_side"],
                source_id=r["source_id"],
                counterpart_id=r["counterpart_id"],
                job_id=str(r["job_id"]),
                decision=tuple(r["decision"]),
                direction=r["direction"],
                fields=tuple(r["fields"]),
                message=r["message"],
                at=r["logged_at"],
            )
            for r in rows
        ]

    async def errors(
        self,
        *,
        job_id: str | None = None,
        mapping: str | None = None,
        limit: int = 100,
    ) -> list[JobError]:
        rows = await self._pool.fetch(
            """
            SELECT * FROM job_errors
            WHERE ($1::uuid IS NULL OR job_id = $1) AND ($2::text IS NULL OR mapping = $2)
            ORDER BY id DESC LIMIT $3
            """,
            UUID(job_id) if job_id else None,
            mapping,
            limit,
        )
        return [
            JobError(
                id=r["id"],
                job_id=str(r["job_id"]),
                mapping=r["mapping"],
                direction=r["direction"],
                source_side=r["source_side"],
                source_id=r["source_id"],
                destination_id=r["destination_id"],
                message=r["message"],
                detail=r["detail"],
                occurred_at=r["occurred_at"],
            )
            for r in rows
        ]
