"""What the state database holds, as the engine and the operator read it:
runs, jobs and their totals, error rows, couplings with their bookkeeping,
records that did not sync."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tablesync.core.couplings import Coupling
from tablesync.core.events import Direction, Side

__all__ = [
    "COORDINATOR_LEASE",
    "KEEP_ANSWER",
    "KEEP_QUESTION",
    "CouplingRow",
    "JobError",
    "JobParams",
    "JobTotals",
    "ProblemRecord",
    "RunRow",
    "Selection",
]


@dataclass(frozen=True, slots=True)
class JobParams:
    """What a job was started for, as apply and replay need it."""

    job_id: str
    mapping: str
    direction: Direction
    kind: str
    ignore_only_coupled: bool
    status: str
    unconditional: bool = False
    create_unmatched: bool = False
    sync_after: bool = False
    company: str = ""
    """The BC company the job counts for; "" for the one company of a deployment
    that names no list of companies."""


@dataclass(frozen=True, slots=True)
class JobTotals:
    job_id: str
    run_id: str | None
    mapping: str
    direction: str
    kind: str
    type: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    partitions: int | None
    partitions_finished: int
    message: str
    counts: dict[str, int]
    company: str = ""

    def as_dict(self) -> dict[str, object]:
        # A deployment of one company shows no company, as before there were several.
        company: dict[str, object] = {"company": self.company} if self.company else {}
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "mapping": self.mapping,
            **company,
            "direction": self.direction,
            "kind": self.kind,
            "type": self.type,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            **self.counts,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class JobError:
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


# A run's options: ``ask`` requests the question at the end of a full
# synchronization, ``question`` and ``asked_at`` say it is asked, ``keep_answer``
# holds the operator's answer.
KEEP_QUESTION = "keep_only_coupled_cleared"
KEEP_ANSWER = "keep_answer"
# The singleton the coordinator holds while it works: a run is left without a
# coordinator while no one holds it.
COORDINATOR_LEASE = "coordinator"


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    kind: str
    status: str
    mappings: list[str]
    options: dict[str, Any]
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str
    company: str | None = None
    """The one BC company the run is scoped to; None for every company synced."""

    @property
    def question(self) -> str | None:
        """The question the run waits on an operator to answer (at the end of a
        full synchronization, whether to keep "sync only coupled records"
        cleared); None when it asks nothing, was answered or ended."""
        if self.status != "running" or KEEP_ANSWER in self.options:
            return None
        question = self.options.get("question")
        return str(question) if question else None


@dataclass(frozen=True, slots=True)
class CouplingRow:
    """A coupling with its bookkeeping, for listings."""

    coupling: Coupling
    coupled_at: datetime
    last_synced_at: datetime
    last_direction: str | None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records an action applies to: by mapping, by id (on either side),
    by time, or all of them (``everything`` must be said explicitly)."""

    mapping: str | None = None
    record_ids: tuple[str, ...] = ()
    since: datetime | None = None
    skipped_only: bool = False
    everything: bool = False

    def is_empty(self) -> bool:
        return not (self.mapping or self.record_ids or self.since or self.everything)


@dataclass(frozen=True, slots=True)
class ProblemRecord:
    mapping: str
    source_side: Side
    source_id: str
    destination_id: str | None
    status: str
    reason: str
    message: str
    attempts: int
    same_failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime | None
    event: bytes

    def as_dict(self) -> dict[str, object]:
        return {
            "mapping": self.mapping,
            "source_side": self.source_side,
            "source_id": self.source_id,
            "bc_id": self.source_id if self.source_side == "bc" else self.destination_id,
            "dataverse_id": self.destination_id if self.source_side == "bc" else self.source_id,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "attempts": self.attempts,
            "same_failures": self.same_failures,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "next_attempt_at": self.next_attempt_at,
        }
