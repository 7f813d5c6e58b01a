"""Runs, jobs, their per-partition counters, error rows and record log in memory, as
``adapters.postgres.jobs`` keeps them (the ``job_totals`` view summed on read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from tablesync.adapters.memory.database import (
    JobRecord,
    MemoryStore,
    RunRecord,
    check,
    jsonb,
    utc,
    uuid_text,
)
from tablesync.core.effects import LogEntry
from tablesync.core.events import Direction, Side
from tablesync.core.plan import COUNTED
from tablesync.core.stored import KEEP_ANSWER, JobError, JobParams, JobTotals, RunRow
from tablesync.errors import CommandRefused
from tablesync.ports.state import PRUNE_BATCH, Pruned

__all__ = ["MemoryJobs"]

_RUN_KINDS = frozenset({"full", "modified", "coupling"})
# One of these at a time: each decides every uncoupled record of its mappings.
_EXCLUSIVE = frozenset({"full", "coupling"})
_RUN_STATUSES = frozenset({"requested", "running", "finished", "failed", "cancelled"})
_ACTIVE = frozenset({"requested", "running"})
_DIRECTIONS = frozenset({"to_integration", "from_integration"})
_JOB_TYPES = frozenset({"synchronization", "coupling", "uncoupling"})
_JOB_STATUSES = frozenset({"pending", "running", "finished", "failed"})
_ENDED = frozenset({"finished", "failed"})


class MemoryJobs(MemoryStore):
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
        await self._pause("jobs.request_run")
        t = self._db.t
        key = uuid_text(run_id)
        check(kind in _RUN_KINDS, f"runs: kind {kind!r}")
        running = self._active_full()
        # Both unique violations (the run id, the one full synchronization)
        # are refused alike, as the Postgres adapter catches them alike.
        if key in t.runs or (kind in _EXCLUSIVE and running is not None):
            raise CommandRefused(f"a full synchronization is already running (run {running})")
        t.runs[key] = RunRecord(
            run_id=key,
            kind=kind,
            status="requested",
            mappings=tuple(mappings),
            options=jsonb(options),
            requested_by=requested_by,
            requested_at=self._db.now(),
            started_at=None,
            finished_at=None,
            message="",
            company=company,
        )

    def _active_full(self, *, besides: str | None = None) -> str | None:
        for run in self._db.t.runs.values():
            if run.kind in _EXCLUSIVE and run.status in _ACTIVE and run.run_id != besides:
                return run.run_id
        return None

    async def run(self, run_id: str) -> RunRow | None:
        await self._pause("jobs.run")
        row = self._db.t.runs.get(uuid_text(run_id))
        return _run(row) if row is not None else None

    async def runs(self, limit: int = 20) -> list[RunRow]:
        await self._pause("jobs.runs")
        rows = sorted(self._db.t.runs.values(), key=lambda r: r.requested_at, reverse=True)
        return [_run(r) for r in rows[: max(limit, 0)]]

    async def start_run(self, run_id: str) -> None:
        await self._pause("jobs.start_run")
        t = self._db.t
        key = uuid_text(run_id)
        row = t.runs.get(key)
        if row is not None and row.status in _ACTIVE:
            started = row.started_at if row.started_at is not None else self._db.now()
            t.runs[key] = replace(row, status="running", started_at=started)

    async def finish_run(self, run_id: str, status: str, message: str = "") -> None:
        await self._pause("jobs.finish_run")
        t = self._db.t
        key = uuid_text(run_id)
        row = t.runs.get(key)
        check(status in _RUN_STATUSES, f"runs: status {status!r}")
        if row is None or row.status not in _ACTIVE:
            return
        check(
            row.kind not in _EXCLUSIVE
            or status not in _ACTIVE
            or self._active_full(besides=key) is None,
            "runs: a second full synchronization would be running",
        )
        t.runs[key] = replace(row, status=status, finished_at=self._db.now(), message=message)

    async def cancel_run(self, run_id: str, message: str) -> bool:
        await self._pause("jobs.cancel_run")
        t = self._db.t
        key = uuid_text(run_id)
        row = t.runs.get(key)
        if row is None or row.status not in _ACTIVE:
            return False
        t.runs[key] = replace(row, status="cancelled", finished_at=self._db.now(), message=message)
        return True

    async def release_stale_runs(self, lease: str, after_s: float, message: str) -> list[str]:
        await self._pause("jobs.release_stale_runs")
        now = self._db.now()
        since = now - timedelta(seconds=after_s)
        held = self._db.holders.get(lease)
        if held is not None and held.expires_at > since:
            return []
        t = self._db.t
        released = sorted(
            key
            for key, row in t.runs.items()
            if row.status in _ACTIVE and row.requested_at <= since
        )
        for key in released:
            t.runs[key] = replace(t.runs[key], status="cancelled", finished_at=now, message=message)
        return released

    async def ask_run(self, run_id: str, question: str) -> bool:
        await self._pause("jobs.ask_run")
        t = self._db.t
        key = uuid_text(run_id)
        row = t.runs.get(key)
        if row is None or row.status != "running":
            return False
        asked = {"question": question, "asked_at": self._db.now().isoformat()}
        t.runs[key] = replace(row, options=jsonb({**row.options, **asked}))
        return True

    async def answer_run(self, run_id: str, keep: bool) -> bool:
        await self._pause("jobs.answer_run")
        t = self._db.t
        key = uuid_text(run_id)
        row = t.runs.get(key)
        if (
            row is None
            or row.status != "running"
            or "question" not in row.options
            or KEEP_ANSWER in row.options
        ):
            return False
        answer = {KEEP_ANSWER: keep, "answered_at": self._db.now().isoformat()}
        t.runs[key] = replace(row, options=jsonb({**row.options, **answer}))
        return True

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
        await self._pause("jobs.create_job")
        t = self._db.t
        key = uuid_text(job_id)
        run = uuid_text(run_id) if run_id else None
        check(direction in _DIRECTIONS, f"jobs: direction {direction!r}")
        check(job_type in _JOB_TYPES, f"jobs: type {job_type!r}")
        check(status in _JOB_STATUSES, f"jobs: status {status!r}")
        if key in t.jobs:
            return
        check(run is None or run in t.runs, f"jobs: run {run} does not exist")
        t.jobs[key] = JobRecord(
            job_id=key,
            run_id=run,
            mapping=mapping,
            direction=direction,
            kind=kind,
            type=job_type,
            status=status,
            ignore_only_coupled=ignore_only_coupled,
            unconditional=unconditional,
            create_unmatched=create_unmatched,
            sync_after=sync_after,
            company=company,
            source_topic=source_topic,
            partitions=partitions,
            interval_start=None,
            snapshot_requested=False,
            started_at=self._db.now(),
            finished_at=None,
            message="",
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
        await self._pause("jobs.continuous_job")
        t = self._db.t
        key = uuid_text(job_id)
        start = utc(interval_start)
        check(direction in _DIRECTIONS, f"jobs: direction {direction!r}")
        interval = (mapping, company, direction, start)
        if key in t.jobs or interval in t.continuous:
            return
        t.jobs[key] = JobRecord(
            job_id=key,
            run_id=None,
            mapping=mapping,
            direction=direction,
            kind="continuous",
            type="synchronization",
            status="running",
            ignore_only_coupled=False,
            source_topic=None,
            partitions=None,
            interval_start=start,
            snapshot_requested=False,
            started_at=start,
            finished_at=None,
            message="",
            company=company,
        )
        t.continuous[interval] = key

    async def job_params(self, job_id: str) -> JobParams | None:
        await self._pause("jobs.job_params")
        row = self._db.t.jobs.get(uuid_text(job_id))
        if row is None:
            return None
        return JobParams(
            row.job_id,
            row.mapping,
            cast(Direction, row.direction),
            row.kind,
            row.ignore_only_coupled,
            row.status,
            row.unconditional,
            row.create_unmatched,
            row.sync_after,
            row.company,
        )

    async def partition_counts(self, job_id: str, topic: str, partition: int) -> dict[str, int]:
        await self._pause("jobs.partition_counts")
        row = self._db.t.partitions.get(uuid_text(job_id), (topic, partition))
        return dict(zip(COUNTED, row.counts, strict=True)) if row is not None else {}

    async def synced_until(self, mapping: str, direction: str) -> datetime | None:
        await self._pause("jobs.synced_until")
        return self._db.t.synced.get((mapping, direction))

    async def set_synced_until(self, mapping: str, direction: str, until: datetime) -> None:
        await self._pause("jobs.set_synced_until")
        self._db.t.synced[(mapping, direction)] = utc(until)

    async def snapshot_requested(self, job_id: str) -> bool:
        await self._pause("jobs.snapshot_requested")
        row = self._db.t.jobs.get(uuid_text(job_id))
        return row is not None and row.snapshot_requested

    async def mark_snapshot_requested(self, job_id: str) -> None:
        await self._pause("jobs.mark_snapshot_requested")
        t = self._db.t
        key = uuid_text(job_id)
        row = t.jobs.get(key)
        if row is not None:
            t.jobs[key] = replace(row, snapshot_requested=True)

    async def totals(self, job_id: str) -> JobTotals | None:
        await self._pause("jobs.totals")
        row = self._db.t.jobs.get(uuid_text(job_id))
        return self._totals(row) if row is not None else None

    def _totals(self, row: JobRecord) -> JobTotals:
        sums = [0] * len(COUNTED)
        finished = 0
        for part in self._db.t.partitions.of(row.job_id).values():
            for n, count in enumerate(part.counts):
                sums[n] += count
            finished += part.finished_at is not None
        return JobTotals(
            job_id=row.job_id,
            run_id=row.run_id,
            mapping=row.mapping,
            direction=row.direction,
            kind=row.kind,
            type=row.type,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            partitions=row.partitions,
            partitions_finished=finished,
            message=row.message,
            counts=dict(zip(COUNTED, sums, strict=True)),
            company=row.company,
        )

    async def listing(
        self,
        *,
        run_id: str | None = None,
        mapping: str | None = None,
        include_empty_continuous: bool = False,
        limit: int = 50,
        company: str | None = None,
    ) -> list[JobTotals]:
        await self._pause("jobs.listing")
        run = uuid_text(run_id) if run_id else None
        rows = [
            r
            for r in self._db.t.jobs.values()
            if (run is None or r.run_id == run)
            and (mapping is None or r.mapping == mapping)
            and (company is None or r.company == company)
        ]
        rows.sort(key=lambda r: (r.mapping, r.company, r.direction))
        rows.sort(key=lambda r: r.started_at, reverse=True)
        jobs = [self._totals(r) for r in rows[: max(limit, 0)]]
        if not include_empty_continuous:
            jobs = [j for j in jobs if j.kind != "continuous" or any(j.counts.values())]
        return jobs

    async def finish_job(self, job_id: str, status: str = "finished", message: str = "") -> None:
        await self._pause("jobs.finish_job")
        t = self._db.t
        key = uuid_text(job_id)
        row = t.jobs.get(key)
        if row is None:
            return
        check(status in _JOB_STATUSES, f"jobs: status {status!r}")
        t.jobs[key] = replace(
            row,
            status=status,
            finished_at=row.finished_at if row.finished_at is not None else self._db.now(),
            message=message or row.message,
        )

    async def close_continuous_jobs(self, interval: timedelta) -> int:
        await self._pause("jobs.close_continuous_jobs")
        t = self._db.t
        now = self._db.now()
        closed = 0
        for key, row in list(t.jobs.items()):
            if row.kind != "continuous" or row.status != "running" or row.interval_start is None:
                continue
            end = row.interval_start + interval
            if end < now:
                t.jobs[key] = replace(row, status="finished", finished_at=end)
                closed += 1
        return closed

    async def prune(self, before: datetime, *, batch: int = PRUNE_BATCH) -> Pruned:
        # One call: the batches of the SQL only bound its locks, which a dict has none of.
        await self._pause("jobs.prune")
        t = self._db.t
        cutoff = utc(before)
        open_runs = {r.run_id for r in t.runs.values() if r.status in _ACTIVE}
        gone = {
            key
            for key, j in t.jobs.items()
            if j.status in _ENDED
            and (j.finished_at if j.finished_at is not None else j.started_at) < cutoff
            and j.run_id not in open_runs
        }
        kept_errors = [e for e in t.errors if e.job_id not in gone]
        errors = len(t.errors) - len(kept_errors)
        t.errors = kept_errors
        kept_log = [e for e in t.record_log if e.job_id not in gone]
        logged = len(t.record_log) - len(kept_log)
        t.record_log = kept_log
        for key in gone:
            t.partitions.rows.pop(key, None)
            del t.jobs[key]
        t.continuous = {k: v for k, v in t.continuous.items() if v not in gone}
        with_jobs = {j.run_id for j in t.jobs.values()}
        runs = [
            key
            for key, r in t.runs.items()
            if r.status not in _ACTIVE
            and (r.finished_at if r.finished_at is not None else r.requested_at) < cutoff
            and key not in with_jobs
        ]
        for key in runs:
            del t.runs[key]
        return Pruned(jobs=len(gone), errors=errors, runs=len(runs), record_log=logged)

    async def record_log(
        self, mapping: str, side: Side, record_id: str, *, limit: int = 50
    ) -> list[LogEntry]:
        await self._pause("jobs.record_log")
        rid = record_id.lower()
        rows = [
            (e.at, n, e)
            for n, e in enumerate(self._db.t.record_log)
            if e.mapping == mapping
            and (
                (e.source_side == side and e.source_id == rid)
                or (e.source_side != side and e.counterpart_id == rid)
            )
        ]
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [e for _, _, e in rows[: max(limit, 0)]]

    async def errors(
        self,
        *,
        job_id: str | None = None,
        mapping: str | None = None,
        limit: int = 100,
    ) -> list[JobError]:
        await self._pause("jobs.errors")
        job = uuid_text(job_id) if job_id else None
        found: list[JobError] = []
        for e in reversed(self._db.t.errors):
            if len(found) >= limit:
                break
            if (job is None or e.job_id == job) and (mapping is None or e.mapping == mapping):
                found.append(e)
        return found


def _run(r: RunRecord) -> RunRow:
    return RunRow(
        run_id=r.run_id,
        kind=r.kind,
        status=r.status,
        mappings=list(r.mappings),
        options=jsonb(r.options),
        requested_by=r.requested_by,
        requested_at=r.requested_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        message=r.message,
        company=r.company,
    )
