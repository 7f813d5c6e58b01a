"""The shapes the admin API reads and writes.

Every request is parsed through these models and every response is produced
from them, and the OpenAPI document is generated from the same models, so the
document cannot drift from what the server does."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from tablesync.adapters.kafka.lag import LagReport
from tablesync.adapters.postgres.admin_queries import LastJobs
from tablesync.adapters.postgres.couplings import CouplingRow
from tablesync.adapters.postgres.jobs import JobError, JobTotals, RunRow
from tablesync.core import filters
from tablesync.core.effects import LogEntry
from tablesync.core.mappings import TableMapping
from tablesync.core.stored import ProblemRecord, Selection
from tablesync.runtime.actions import ActionResult
from tablesync.runtime.operations import RunProgress

__all__ = [
    "ActionOut",
    "AnswerRequest",
    "Counts",
    "CoupleRequest",
    "CouplingOut",
    "CouplingPath",
    "CouplingsQuery",
    "DeleteRecordsRequest",
    "ErrorOut",
    "ErrorsQuery",
    "FieldOut",
    "FieldProblem",
    "FindDeletedRequest",
    "FullSyncRequest",
    "HealthCheckOut",
    "HealthLoopOut",
    "HealthOut",
    "JobErrorOut",
    "JobOut",
    "JobPath",
    "JobsQuery",
    "LagHistoryOut",
    "LagHistoryQuery",
    "LagOut",
    "LagPoint",
    "LagSeries",
    "MappingChange",
    "MappingDetailOut",
    "MappingLagOut",
    "MappingOut",
    "MappingPath",
    "PartitionLagOut",
    "ProblemOut",
    "ProblemsQuery",
    "RecordLogOut",
    "RecordLogQuery",
    "RecordPath",
    "RecordSelection",
    "RunAccepted",
    "RunOut",
    "RunPath",
    "RunProgressOut",
    "RunsQuery",
    "SyncModifiedRequest",
    "UncoupledOut",
]

MappingDirection = Literal["to_integration", "from_integration", "bidirectional"]
JobStatus = Literal["pending", "running", "finished", "failed"]
SideName = Literal["bc", "dataverse"]


class _In(BaseModel):
    """Requests: an unknown field is refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


# Requests


class MappingChange(_In):
    direction: MappingDirection | None = None
    sync_only_coupled: bool | None = Field(
        default=None, description="Sync only coupled records: no creates for uncoupled ones."
    )
    table_filter: str | None = Field(
        default=None, description="BC filter in OData $filter syntax; an empty text clears it."
    )
    integration_table_filter: str | None = Field(
        default=None, description="Dataverse filter in OData $filter syntax; empty clears it."
    )


class CoupleRequest(_In):
    mapping: str = Field(min_length=1, description="The mapping, e.g. CUSTOMER.")
    bc_id: UUID
    dataverse_id: UUID


class CouplingRunRequest(_In):
    mappings: list[str] = Field(
        default_factory=list,
        description="Only these mappings; every mapping with match fields when empty.",
    )
    create_new: bool = Field(
        default=False, description="Create the records no match is found for on the other side."
    )
    sync_after: bool = Field(
        default=False, description="Write the mapped values to the records coupled."
    )


class CoupleRecordsRequest(_In):
    side: SideName = Field(description="The side the records' ids are on.")
    ids: list[UUID] = Field(min_length=1, description="The records to couple by match.")
    create_new: bool = Field(
        default=False, description="Create the records no match is found for on the other side."
    )
    sync_after: bool = Field(
        default=False, description="Write the mapped values to the records coupled."
    )


class FullSyncRequest(_In):
    mappings: list[str] = Field(
        default_factory=list, description="Only these mappings; every mapping when empty."
    )
    keep_only_coupled_cleared: bool = Field(
        default=False,
        description="At the end keep sync-only-coupled cleared, so new records keep being created.",
    )
    unconditional: bool = Field(
        default=False,
        description="Compare every coupled record with its counterpart, not only the ones "
        "changed since the last sync (after adding or fixing a field mapping). Reads both "
        "tables: every coupled record's counterpart is fetched.",
    )
    ask: bool = Field(
        default=False,
        description="At the end ask whether to keep sync-only-coupled cleared (the run's "
        "question, answered with POST /api/runs/{run_id}/answer) instead of taking "
        "keep_only_coupled_cleared; unanswered within sync.keep_question_wait_s it is "
        "restored.",
    )


class AnswerRequest(_In):
    keep: StrictBool = Field(
        description="True keeps sync-only-coupled cleared on the run's mappings; false restores it."
    )


class SyncModifiedRequest(_In):
    mapping: str | None = Field(default=None, description="One mapping; every mapping when null.")


class RecordSelection(_In):
    """Which records of the errors list an action applies to, as the CLI's
    ids, ``--mapping``, ``--since`` and ``--all`` say; at least one is needed."""

    ids: list[UUID] = Field(
        default_factory=list, description="Records by id, on either side (BC or Dataverse)."
    )
    mapping: str | None = Field(default=None, description="Only the records of this mapping.")
    since: datetime | None = Field(
        default=None,
        description="Only records that failed since then (delete-couplings: coupled since "
        "then); a time without a zone is UTC.",
    )
    all: bool = Field(
        default=False, description="Every record the errors list shows: it must be said."
    )

    @model_validator(mode="after")
    def _says_which(self) -> RecordSelection:
        if not (self.ids or self.mapping or self.since or self.all):
            raise ValueError("say which records: ids, mapping, since, or all: true for every one")
        return self

    def selection(self) -> Selection:
        return Selection(
            mapping=self.mapping,
            record_ids=tuple(str(i) for i in self.ids),
            since=self.since,
            everything=self.all,
        )


class DeleteRecordsRequest(RecordSelection):
    confirm: bool = Field(
        default=False,
        description="Must be true: the surviving record of each selected coupling is deleted "
        "on its side (the CLI's --yes).",
    )


class FindDeletedRequest(_In):
    mapping: str | None = Field(default=None, description="One mapping; every mapping when null.")


# Query strings


class JobsQuery(_In):
    mapping: str | None = None
    run: UUID | None = Field(default=None, description="Only the jobs of this run.")
    kind: str | None = Field(
        default=None, max_length=40, description="full, modified, continuous, ..."
    )
    status: JobStatus | None = None
    include_empty_continuous: bool = Field(
        default=False, description="Also list continuous jobs that counted nothing."
    )
    company: str | None = Field(
        default=None, max_length=200, description="Only the jobs of this BC company (its id)."
    )
    limit: int = Field(default=50, ge=1, le=1000)


class ErrorsQuery(_In):
    limit: int = Field(default=100, ge=1, le=1000)


class ProblemsQuery(_In):
    mapping: str | None = None
    skipped: bool = Field(default=False, description="Only records no longer retried.")
    limit: int = Field(default=200, ge=1, le=1000)


class CouplingsQuery(_In):
    mapping: str | None = None
    search: str | None = Field(default=None, description="A record id on either side or a BC key.")
    limit: int = Field(default=100, ge=1, le=1000)


class RecordLogQuery(_In):
    side: SideName = Field(description="The side the record's id is on.")
    id: UUID = Field(description="The record's id on that side.")
    limit: int = Field(default=50, ge=1, le=1000)


class RunsQuery(_In):
    limit: int = Field(default=20, ge=1, le=200)


class LagHistoryQuery(_In):
    minutes: int = Field(default=60, ge=1, le=60)


# Path parameters


class MappingPath(_In):
    name: str


class JobPath(_In):
    job_id: UUID


class RunPath(_In):
    run_id: UUID


class RecordPath(_In):
    mapping: str


class CouplingPath(_In):
    mapping: str
    side: SideName
    record_id: UUID


# Responses


class HealthCheckOut(BaseModel):
    ok: bool
    detail: str = Field(description="'answered', or why the dependency did not.")
    age_s: float | None = Field(description="Seconds since it was last asked.")


class HealthLoopOut(BaseModel):
    ok: bool
    last_beat_s: float | None = Field(description="Seconds since the loop last came round.")


class HealthOut(BaseModel):
    """The readiness of the admin's process: its dependencies and service loops."""

    status: Literal["ok", "unavailable"] = "ok"
    checks: dict[str, HealthCheckOut] = Field(default_factory=dict)
    loops: dict[str, HealthLoopOut] = Field(default_factory=dict)


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str = Field(description="What was wrong, naming the field or resource.")
    fields: list[FieldProblem] | None = None
    run_id: str | None = Field(default=None, description="409 on full-sync: the running run.")


class Counts(BaseModel):
    inserted: int
    modified: int
    deleted: int
    unchanged: int
    skipped: int
    failed: int
    pending: int
    coupled: int
    uncoupled: int
    unmatched: int = Field(
        default=0, description="A coupling run's records no match was found for."
    )


class JobOut(BaseModel):
    job_id: str
    run_id: str | None
    mapping: str
    direction: str
    kind: str
    type: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    partitions: int | None
    partitions_finished: int
    counts: Counts
    message: str
    company: str = Field(
        default="",
        description="The BC company the job counted for; empty with a single company.",
    )

    @classmethod
    def of(cls, j: JobTotals) -> JobOut:
        duration = (j.finished_at - j.started_at).total_seconds() if j.finished_at else None
        return cls(
            job_id=j.job_id,
            run_id=j.run_id,
            mapping=j.mapping,
            direction=j.direction,
            kind=j.kind,
            type=j.type,
            status=j.status,
            started_at=j.started_at,
            finished_at=j.finished_at,
            duration_s=round(duration, 3) if duration is not None else None,
            partitions=j.partitions,
            partitions_finished=j.partitions_finished,
            counts=Counts.model_validate(j.counts),
            message=j.message,
            company=j.company,
        )


class MappingOut(BaseModel):
    name: str
    bc_table: str
    dataverse_table: str
    direction: MappingDirection
    sync_only_coupled: bool
    table_filter: str | None
    integration_table_filter: str | None
    depends_on: list[str]
    update_conflict: str
    deletion: str
    last_job: JobOut | None = Field(
        default=None,
        description="The newest job someone started: a run's step, a replay or a record action.",
    )
    last_continuous: JobOut | None = Field(
        default=None,
        description="The newest interval of continuous work that counted something; "
        "it runs until its interval closes and never replaces last_job.",
    )

    @classmethod
    def of(cls, m: TableMapping, last: LastJobs | None = None) -> MappingOut:
        last = last or LastJobs()
        return cls(
            name=m.name,
            bc_table=m.bc_table,
            dataverse_table=m.dataverse_table,
            direction=m.direction,
            sync_only_coupled=m.sync_only_coupled,
            table_filter=filters.to_odata(m.table_filter) if m.table_filter else None,
            integration_table_filter=(
                filters.to_odata(m.integration_table_filter) if m.integration_table_filter else None
            ),
            depends_on=list(m.depends_on),
            update_conflict=m.update_conflict,
            deletion=m.deletion,
            last_job=JobOut.of(last.started) if last.started else None,
            last_continuous=JobOut.of(last.continuous) if last.continuous else None,
        )


class FieldOut(BaseModel):
    bc: str | None
    dataverse: str | None
    direction: str
    lookup: list[str] | None = None
    on_create_only: bool = False
    enabled: bool = True
    not_null: bool = False


class MappingDetailOut(MappingOut):
    fields: list[FieldOut]

    @classmethod
    def detail(cls, m: TableMapping, last: LastJobs | None = None) -> MappingDetailOut:
        return cls(
            **MappingOut.of(m, last).model_dump(),
            fields=[
                FieldOut(
                    bc=f.bc,
                    dataverse=f.dataverse,
                    direction=f.direction,
                    lookup=list(f.lookup.mappings) if f.lookup else None,
                    on_create_only=f.on_create_only,
                    enabled=f.enabled,
                    not_null=f.not_null,
                )
                for f in m.fields
            ],
        )


class RecordLogOut(BaseModel):
    """One decision tablesync made on a record, in the job it counted in."""

    at: datetime
    mapping: str
    company: str = Field(description="The BC company; '' for the one company of a deployment.")
    job_id: str
    decision: list[str] = Field(description="The job counters it added to.")
    direction: str | None = Field(description="The direction written; null: nothing written.")
    source_side: str
    source_id: str
    counterpart_id: str | None
    fields: list[str] = Field(description="The names of the fields written.")
    message: str

    @classmethod
    def of(cls, e: LogEntry) -> RecordLogOut:
        return cls.model_validate(dataclasses.asdict(e))


class JobErrorOut(BaseModel):
    id: int
    job_id: str
    mapping: str
    direction: str
    source_side: str
    source_id: str
    destination_id: str | None
    message: str
    detail: str
    occurred_at: datetime

    @classmethod
    def of(cls, e: JobError) -> JobErrorOut:
        return cls(
            id=e.id,
            job_id=e.job_id,
            mapping=e.mapping,
            direction=e.direction,
            source_side=e.source_side,
            source_id=e.source_id,
            destination_id=e.destination_id,
            message=e.message,
            detail=e.detail,
            occurred_at=e.occurred_at,
        )


class CouplingOut(BaseModel):
    mapping: str
    bc_id: str
    dataverse_id: str
    bc_key: str | None
    coupled_at: datetime
    last_synced_at: datetime
    last_direction: str | None
    bc_deleted: bool
    dataverse_deleted: bool

    @classmethod
    def of(cls, r: CouplingRow) -> CouplingOut:
        c = r.coupling
        return cls(
            mapping=c.mapping,
            bc_id=c.bc_id,
            dataverse_id=c.dv_id,
            bc_key=c.bc_key,
            coupled_at=r.coupled_at,
            last_synced_at=r.last_synced_at,
            last_direction=r.last_direction,
            bc_deleted=c.bc_deleted,
            dataverse_deleted=c.dv_deleted,
        )


class ProblemOut(BaseModel):
    """A record that did not sync: a row of BC's Coupled Data Synchronization Errors."""

    mapping: str
    status: str = Field(description="pending, failed (retried with backoff) or skipped.")
    reason: str = Field(description="lookup, api, deleted (the coupled record vanished), ...")
    message: str
    source_side: SideName
    source_id: str
    bc_id: str | None
    dataverse_id: str | None
    attempts: int
    same_failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, p: ProblemRecord) -> ProblemOut:
        bc = p.source_side == "bc"
        return cls(
            mapping=p.mapping,
            status=p.status,
            reason=p.reason,
            message=p.message,
            source_side=p.source_side,
            source_id=p.source_id,
            bc_id=p.source_id if bc else p.destination_id,
            dataverse_id=p.destination_id if bc else p.source_id,
            attempts=p.attempts,
            same_failures=p.same_failures,
            first_failed_at=p.first_failed_at,
            last_failed_at=p.last_failed_at,
            next_attempt_at=p.next_attempt_at,
        )


class ActionOut(BaseModel):
    """What an action on the errors list did: each job it wrote, with their counts summed."""

    action: str
    records: int = Field(description="Records the selection held.")
    counts: dict[str, int] = Field(description="Counts of the action's jobs, those above 0.")
    jobs: list[str] = Field(description="The jobs it wrote, one per mapping and direction.")

    @classmethod
    def of(cls, r: ActionResult) -> ActionOut:
        return cls(
            action=r.action,
            records=r.records,
            counts={k: v for k, v in sorted(r.counts.items()) if v},
            jobs=list(r.jobs),
        )


class UncoupledOut(BaseModel):
    mapping: str
    bc_id: str
    dataverse_id: str


class PartitionLagOut(BaseModel):
    group: str
    service: str
    mapping: str | None
    topic: str
    partition: int
    committed: int | None = Field(description="Committed offset; null before the first commit.")
    end: int
    lag: int
    oldest_age_s: float | None = Field(
        description="Age of the oldest unprocessed message; null when lag is 0."
    )


class MappingLagOut(BaseModel):
    mapping: str
    group: str
    lag: int
    oldest_age_s: float | None
    partitions: int


class LagOut(BaseModel):
    read_at: datetime
    total: int
    mappings: list[MappingLagOut]
    partitions: list[PartitionLagOut]
    missing_topics: list[str]

    @classmethod
    def of(cls, report: LagReport) -> LagOut:
        return cls.model_validate(report.as_dict())


class LagPoint(BaseModel):
    at: datetime
    lag: int


class LagSeries(BaseModel):
    mapping: str
    points: list[LagPoint]


class LagHistoryOut(BaseModel):
    sample_every_s: float
    series: list[LagSeries]


class RunOut(BaseModel):
    run_id: str
    kind: str
    status: str
    mappings: list[str]
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str
    question: str | None = Field(
        default=None,
        description="The question the run waits on an operator to answer, while it is "
        "open: keep_only_coupled_cleared at the end of a full synchronization.",
    )
    unconditional: bool = Field(
        default=False,
        description="A full synchronization that compares every coupled record with its "
        "counterpart, not only those changed since they were last synchronized.",
    )
    company: str | None = Field(
        default=None, description="The one BC company the run is of; null for every one."
    )

    @classmethod
    def of(cls, r: RunRow) -> RunOut:
        return cls(
            run_id=r.run_id,
            kind=r.kind,
            status=r.status,
            mappings=r.mappings,
            requested_by=r.requested_by,
            requested_at=r.requested_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            message=r.message,
            question=r.question,
            unconditional=bool(r.options.get("unconditional", False)),
            company=r.company,
        )


class RunProgressOut(RunOut):
    done: bool
    failed_records: int
    jobs: list[JobOut]

    @classmethod
    def progress(cls, p: RunProgress) -> RunProgressOut:
        return cls(
            **RunOut.of(p.run).model_dump(),
            done=p.done,
            failed_records=p.failed_records,
            jobs=[JobOut.of(j) for j in p.jobs],
        )


class RunAccepted(BaseModel):
    run_id: str
    status: Literal["requested"] = "requested"
    progress: str = Field(description="Where to GET the run's progress.")
