"""What the services need from the state database, as small Protocols.

Two adapters implement each: ``adapters.postgres`` (asyncpg, the product's)
and ``adapters.memory`` (plain dicts, for the simulator and the dry run).
One contract suite per port (``tests/contract/``) runs against both, so the
in-memory one is held to the real behaviour. Each method's docstring is the
contract; ids are the sides' lower-case GUID strings. A call that cannot
reach the database raises one of ``adapters.transient.TRANSIENT`` and
changes nothing it did not say it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from tablesync.core.couplings import Coupling
from tablesync.core.effects import BatchEffects, DueRecord, Intent, LogEntry, WriteTarget
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import LookupKey
from tablesync.core.mapping_load import TableInfoSource
from tablesync.core.mappings import MappingSet, TableMapping
from tablesync.core.stored import (
    CouplingRow,
    JobError,
    JobParams,
    JobTotals,
    ProblemRecord,
    RunRow,
    Selection,
)
from tablesync.ports.claims import ClaimProof

__all__ = [
    "ApplyState",
    "Checkpoints",
    "Couplings",
    "Jobs",
    "Mappings",
    "Problems",
    "Pruned",
    "Singleton",
    "StateStores",
]


class Couplings(Protocol):
    """The couplings of every mapping: read per batch; written only through
    ``ApplyState.commit`` (with the batch) or the operator's ``couple``/``uncouple``."""

    async def by_ids(self, mapping: str, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        """The couplings of these records of ``side``, by that side's id."""
        ...

    async def coupled_among(self, mapping: str, side: Side, ids: Sequence[str]) -> set[str]:
        """Of ``ids`` on ``side``, those coupled."""
        ...

    async def resolve(self, keys: Iterable[LookupKey]) -> dict[LookupKey, str]:
        """Lookups through couplings: BC natural key -> Dataverse id, Dataverse id -> BC key;
        each through the couplings of its key's company only."""
        ...

    async def all_ids(
        self, mapping: str, side: Side, *, coupled_before: datetime, company: str | None = None
    ) -> set[str]:
        """Ids on ``side`` of couplings made before ``coupled_before``, not flagged deleted;
        of one BC company's records when ``company`` is given."""
        ...

    async def listing(
        self,
        mapping: str | None = None,
        *,
        search: str | None = None,
        limit: int = 100,
        company: str | None = None,
    ) -> list[CouplingRow]:
        """Couplings with their bookkeeping, newest synced first; ``search`` is
        an id on either side or a part of the BC key; ``company`` one BC company's."""
        ...

    async def of_mapping(self, mapping: str) -> list[Coupling]: ...

    async def count(self, mapping: str | None = None) -> int: ...

    async def get(self, mapping: str, side: Side, record_id: str) -> Coupling | None: ...

    async def couple(self, c: Coupling, direction: str | None) -> None:
        """Inserts or replaces one coupling (committed on return); a Dataverse
        row coupled to another BC record before is coupled to this one only."""
        ...

    async def uncouple(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        """Removes the coupling of one record; returns it, or None when there was none."""
        ...


class ApplyState(Protocol):
    """Apply's own state: positions, intents, retry status, and the one
    transaction that makes a batch's effects durable."""

    async def positions(self, mapping: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        """The next offset to apply per (topic, partition) of ``topics``."""
        ...

    async def take_epochs(
        self, mapping: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Takes ``partitions`` of the mapping's topics for this instance: a new
        epoch for each, higher than any before, fencing off whoever held them."""
        ...

    async def check_epochs(self, mapping: str, epochs: Mapping[tuple[str, int], int]) -> None:
        """Raises ``errors.Fenced`` when another instance has taken any of these
        partitions since ``epochs`` were taken: asked before every write."""
        ...

    async def commit(self, effects: BatchEffects, *, claim: ClaimProof | None = None) -> None:
        """Every effect of a batch in one transaction: all of them or none.
        With ``claim``, only while its holder still holds the batch's records
        (``ports.claims``); ``errors.ClaimLost`` otherwise, nothing committed.
        A position only moves forward; couplings per ``core.effects.latest_couplings``;
        conditional counters per ``core.effects.counted_removals``."""
        ...

    async def record_intents(
        self, intents: Sequence[Intent], *, held: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Announces creates before the destination is called (committed on
        return); a second announce of one source replaces its destination and
        values. With ``held`` (the epochs of the partitions the work came
        from), refused with ``errors.Fenced`` as a whole once another instance
        took one of them, as are ``record_made`` and ``announce_writes``."""
        ...

    async def record_made(
        self,
        mapping: str,
        items: Sequence[tuple[Side, str, str]],
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        """Notes that announced creates were made, and the ids they got, as soon
        as the API answered."""
        ...

    async def announce_writes(
        self,
        mapping: str,
        targets: Sequence[WriteTarget],
        images: Mapping[WriteTarget, dict[str, FieldValue]] | None = None,
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> set[WriteTarget]:
        """Announces updates and deletions before the destination is called
        (committed on return), each update with what it leaves on its record
        (kept after those of earlier attempts, in the order announced; an
        image the same as the latest is not kept twice); returns those an
        attempt that did not commit had announced already."""
        ...

    async def written_images(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> dict[tuple[Side, str], list[dict[str, FieldValue]]]:
        """Of ``records``, those with an announced update not yet committed,
        with what each attempt that announced it would leave on the record,
        the latest last."""
        ...

    async def announced_writes(
        self, mapping: str, targets: Sequence[WriteTarget]
    ) -> set[WriteTarget]:
        """Of ``targets``, those announced and not yet resolved by a commit."""
        ...

    async def deleted_among(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> set[tuple[Side, str]]:
        """Of ``records``, those whose deletion tablesync has seen."""
        ...

    async def intents_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, Intent]:
        """The open create intents of these sources on ``side``, by source id."""
        ...

    async def named_by_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> set[str]:
        """Of ``dest_ids``, the records open intents from ``source_side`` name."""
        ...

    async def open_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> list[Intent]:
        """Open intents of creates from ``source_side`` that name one of
        ``dest_ids``, or whose destination id is not known yet."""
        ...

    async def claim_stale_intents(
        self, mapping: str, older_than_s: float, limit: int
    ) -> list[Intent]:
        """Intents nobody announced or looked at for ``older_than_s`` seconds
        and whose source has no retry status: left by an attempt that died.
        Claimed by touching them, so a second call within ``older_than_s``
        does not return them again."""
        ...

    async def resolve_intents(self, mapping: str, sources: Sequence[tuple[Side, str]]) -> None:
        """Removes the create intents of these sources (committed on return)."""
        ...

    async def claim_due(self, mapping: str, limit: int, lease_s: float) -> list[DueRecord]:
        """Records (not skipped) whose retry is due, or pending ones whose lookup
        target mapping got a coupling since they failed; claimed with a lease of
        ``lease_s`` seconds so a second call within it does not return them."""
        ...

    async def statuses_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, DueRecord]:
        """The retry status of these sources on ``side``, by source id."""
        ...


PRUNE_BATCH = 1000
"""Rows one statement of ``Jobs.prune`` deletes at most."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one ``Jobs.prune`` deleted."""

    jobs: int = 0
    errors: int = 0
    runs: int = 0
    record_log: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "jobs": self.jobs,
            "errors": self.errors,
            "runs": self.runs,
            "record_log": self.record_log,
        }


class Jobs(Protocol):
    """Runs, jobs, their per-partition counters, error rows and record log."""

    async def request_run(
        self,
        run_id: str,
        kind: str,
        mappings: Sequence[str],
        options: dict[str, Any],
        requested_by: str,
        company: str | None = None,
    ) -> None:
        """Records a requested run, of one BC company or (None) of every one; raises
        ``AlreadyRunning`` (a ``CommandRefused`` naming the running run) for a second
        full synchronization while one is requested or running."""
        ...

    async def run(self, run_id: str) -> RunRow | None: ...

    async def runs(self, limit: int = 20) -> list[RunRow]: ...

    async def start_run(self, run_id: str) -> None: ...

    async def finish_run(self, run_id: str, status: str, message: str = "") -> None:
        """Ends a requested or running run as ``status``; one that ended
        already (cancelled by an operator, say) stays as it ended."""
        ...

    async def cancel_run(self, run_id: str, message: str) -> bool:
        """Ends a requested or running run as cancelled, at once: its steps
        not started never start, and a full synchronization may be requested
        again. False when the run does not exist or ended already."""
        ...

    async def release_stale_runs(self, lease: str, after_s: float, message: str) -> list[str]:
        """Ends as cancelled, with ``message``, every run requested or running
        for at least ``after_s`` while no holder has had the singleton ``lease``
        (the coordinator's) within the last ``after_s``: the run ids released."""
        ...

    async def ask_run(self, run_id: str, question: str) -> bool:
        """Records on a running run the question it waits on (its options'
        ``question``, with ``asked_at``); an answer given already is kept. False
        when the run does not exist or is not running."""
        ...

    async def answer_run(self, run_id: str, keep: bool) -> bool:
        """Stores the answer to a running run's open question (its options'
        ``keep_answer``, with ``answered_at``). False when the run does not
        exist, is not running, asks nothing or was answered already."""
        ...

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
        """Creates a job; a second create of one job id changes nothing.
        ``unconditional``: coupled records are compared with their
        counterparts even at the version last synced. ``company``: the BC
        company whose records it counts."""
        ...

    async def continuous_job(
        self,
        job_id: str,
        mapping: str,
        direction: str,
        interval_start: datetime,
        *,
        company: str = "",
    ) -> None:
        """Creates the continuous job of one interval (of one company) unless it exists."""
        ...

    async def job_params(self, job_id: str) -> JobParams | None: ...

    async def snapshot_requested(self, job_id: str) -> bool: ...

    async def mark_snapshot_requested(self, job_id: str) -> None: ...

    async def totals(self, job_id: str) -> JobTotals | None:
        """A job with its counters summed over its partitions."""
        ...

    async def partition_counts(self, job_id: str, topic: str, partition: int) -> dict[str, int]:
        """One partition's counters of a job; empty when none were committed."""
        ...

    async def listing(
        self,
        *,
        run_id: str | None = None,
        mapping: str | None = None,
        include_empty_continuous: bool = False,
        limit: int = 50,
        company: str | None = None,
    ) -> list[JobTotals]: ...

    async def finish_job(
        self, job_id: str, status: str = "finished", message: str = ""
    ) -> None: ...

    async def close_continuous_jobs(self, interval: timedelta) -> int:
        """Finishes continuous jobs whose interval is over; returns how many."""
        ...

    async def errors(
        self,
        *,
        job_id: str | None = None,
        mapping: str | None = None,
        limit: int = 100,
    ) -> list[JobError]: ...

    async def record_log(
        self, mapping: str, side: Side, record_id: str, *, limit: int = 50
    ) -> list[LogEntry]:
        """The record log of one record of ``mapping``, newest first (ties in
        the order written, the last first): the decisions on it as the source
        (``side``, ``record_id``) and those on its counterpart that name it.
        Written only through ``ApplyState.commit``, with the batch's counters."""
        ...

    async def synced_until(self, mapping: str, direction: str) -> datetime | None:
        """Where the last finished synchronization of a mapping and direction began."""
        ...

    async def set_synced_until(self, mapping: str, direction: str, until: datetime) -> None: ...

    async def prune(self, before: datetime, *, batch: int = PRUNE_BATCH) -> Pruned:
        """Deletes the jobs that ended (finished or failed) before ``before``,
        with their counters, error rows and record log rows, then the runs that ended before it
        and have no job left. A job that has not ended (pending, running) is
        never deleted, nor any job of a run still requested or running: a
        resumed step finds its jobs. At most ``batch`` rows go per statement,
        each its own transaction, so a large prune never holds its locks for
        long. A job's error rows, record log rows and counters go in the same
        pass as the job (just before it): they are kept as long as their job,
        whatever their own age, and a prune interrupted in between leaves a job
        the next one deletes."""
        ...


class Mappings(Protocol):
    """The mappings in force, versioned: a change shows as a new ``version``."""

    async def replace_all(self, document: dict[str, Any]) -> MappingSet:
        """Validates ``document`` and makes it the mappings in force."""
        ...

    async def load(self) -> MappingSet: ...

    async def version(self) -> datetime | None: ...

    async def change(
        self,
        name: str,
        *,
        direction: str | None = None,
        sync_only_coupled: bool | None = None,
        table_filter: str | None = None,
        integration_table_filter: str | None = None,
    ) -> TableMapping:
        """Changes one mapping; an empty filter text clears the filter."""
        ...

    async def set_only_coupled(self, names: list[str], value: bool) -> None: ...

    async def outside_catalog(self) -> list[tuple[Side, str]]:
        """The tables the mappings in force name that the built-in catalog lacks: the
        services read both sides' metadata before loading them."""
        ...

    def use_tables(self, tables: TableInfoSource) -> None:
        """Validate every load and change against ``tables`` from now on (the built-in
        catalog until then): the services' metadata with the catalog layered on top."""
        ...


class Problems(Protocol):
    """Records that did not sync and couplings whose record vanished."""

    async def records(self, selection: Selection, *, limit: int = 1000) -> list[ProblemRecord]: ...

    async def reset(self, records: Sequence[ProblemRecord]) -> None:
        """Clears the skip: the next failure counts as the first one again."""
        ...

    async def couplings(
        self, selection: Selection, *, deleted_only: bool = False, limit: int = 100_000
    ) -> list[Coupling]: ...

    async def flag_deleted(self, coupling: Coupling, side: Side) -> bool:
        """Marks a coupling's record on ``side`` as gone; False when it already was."""
        ...

    async def list_deleted(
        self, coupling: Coupling, side: Side, message: str, event: bytes
    ) -> None:
        """Lists a coupled record found gone as skipped (reason ``deleted``), so
        the operator can restore it, delete its counterpart or uncouple it."""
        ...


class Checkpoints(Protocol):
    """Capture's watermarks and delta links, and the snapshots it served."""

    async def watermark(self, side: Side, table: str) -> datetime | None: ...

    async def store_watermark(self, side: Side, table: str, watermark: datetime) -> None:
        """Moves the watermark forward only."""
        ...

    async def delta_link(self, side: Side, table: str) -> str | None:
        """The delta link capture follows next on a table with change tracking."""
        ...

    async def store_delta_link(self, side: Side, table: str, link: str | None) -> None:
        """Replaces the delta link (None forgets it); the watermark stays as it is."""
        ...

    async def begin_snapshot(self, job_id: str, side: Side, table: str) -> bool:
        """Notes that a job's snapshot is being served; True when it was served
        to the end before (then it is not served again)."""
        ...

    async def finish_snapshot(self, job_id: str, records: int) -> None: ...


class Singleton(Protocol):
    """A lease on one name (the coordinator's, capture's of one side): at
    most one holder at a time across processes, each instance of an
    implementation one holder.

    A hold lasts ``ttl_s`` from the call that took or renewed it, by the
    database's clock, and ends then unless renewed: a holder that dies or is
    cut off from the database frees it within ``ttl_s``, without anyone's
    help, and a database restart does not end it. The epoch tells one hold
    from the next: it stays the same while a holder renews without a gap
    and is greater each time a holder takes the lease anew."""

    @property
    def ttl_s(self) -> float:
        """How long a hold lasts after the ``try_hold`` that took or renewed it."""
        ...

    async def try_hold(self) -> int | None:
        """Takes the lease when it is free or expired, or renews it when this
        holder has it: its epoch, or None while another holder has it. A
        holder whose own hold expired takes it anew, with a greater epoch."""
        ...

    async def release(self) -> None:
        """Ends this holder's hold, if it has one: the next ``try_hold`` of
        anyone may take it. Releasing what one does not hold changes nothing."""
        ...


@dataclass(frozen=True, slots=True)
class StateStores:
    """Every state port, built once by the composition and passed to services."""

    couplings: Couplings
    apply_state: ApplyState
    jobs: Jobs
    mappings: Mappings
    problems: Problems
    checkpoints: Checkpoints
