"""What a performed decision leaves in the state, and where it counts.

``record`` turns one record's decision, with what its writes did, into a
``Record``: the coupling entries, removals and deletions it makes, the
intents and announced writes it settles, its retry listing (pending, failed,
skipped) with the job's error row, and the job counters it adds to, each
counted once:

- a retry that fails again is listed already, and is not counted again in
  every interval (a skip is counted: it is news);
- a removal counts only if its commit is the one that removes the coupling
  (``BatchEffects.count_if_uncoupled``): the two records of a pair are
  decided on two partitions, and both may remove it;
- the pair an interrupted create made, found and decided with its record's
  deletion, counts as inserted in the job of the direction it was made, apart
  from the event deciding it (``Record.recovered``): that event counts its own
  decision, and the insert is the interrupted attempt's, as the creates the
  sweep of stale intents settles are;
- a version of an uncoupled record found deleted since is not created, and
  counts as unchanged, as its replays do.

What it counts it also logs (``Record.about``): the record log's row of a
decision is written where its counters are added, with the same job and
names, so the two never disagree; a decision that counts nothing logs nothing.

A record counts in the job of the direction it wrote to (``counted_towards``):
the run's job when that job counts that direction, otherwise the continuous
job of the interval (``continuous_job_id``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from tablesync.core.coupling_rules import couple_created, couple_matched, restored, row_stamp
from tablesync.core.couplings import Coupling
from tablesync.core.decision import Facts
from tablesync.core.effects import (
    BatchEffects,
    Decided,
    DueRecord,
    ErrorRow,
    StatusChange,
    WriteTarget,
)
from tablesync.core.events import Direction, RecordFailed, Side, other_side
from tablesync.core.fieldmap import Mapped, echo_of_earlier_write
from tablesync.core.mappings import TableMapping, direction_of
from tablesync.core.outcome import operation_of, written_towards
from tablesync.core.plan import (
    Create,
    Decision,
    Fail,
    Ignore,
    JobContext,
    MarkDeleted,
    Pending,
    Remove,
    Restore,
    Skip,
    Unchanged,
    Uncouple,
    Update,
    counters_of,
)
from tablesync.core.records import Row
from tablesync.core.retry import NotSynced, RetryPolicy, listing, waiting_for

__all__ = [
    "Performed",
    "Record",
    "continuous_job_id",
    "counted_towards",
    "counts_made_pair",
    "interval_start",
    "record",
    "run_job",
]

_JOB_NAMESPACE = uuid.UUID("0c7a4f61-7461-626c-6573-796e636a6f62")

Source = tuple[Side, str]


def continuous_job_id(mapping: str, direction: Direction, interval_start: datetime) -> str:
    """The job of continuous sync that counts ``mapping``'s ``direction`` in the
    interval starting at ``interval_start``: the same id in every process."""
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{mapping}:{direction}:{interval_start.isoformat()}"))


def interval_start(now: datetime, interval_s: float) -> datetime:
    """The start of the continuous job interval ``now`` falls in."""
    return datetime.fromtimestamp((now.timestamp() // interval_s) * interval_s, tz=now.tzinfo)


def run_job(job: JobContext, direction: Direction) -> str | None:
    """The run's own job, when it counts ``direction``; None: the continuous job does."""
    if job.job_id is not None and job.direction in (None, direction):
        return job.job_id
    return None


def counted_towards(d: Decision, source: Side) -> Direction:
    """The direction whose job counts ``d``, made on a change from ``source``."""
    return written_towards(d) or direction_of(source)


def counts_made_pair(f: Facts, d: Decision) -> bool:
    """Whether ``d`` also counts the pair an interrupted create made (then its
    insert counts in the job of the direction of the create)."""
    return f.paired and isinstance(d, Remove | Uncouple | MarkDeleted | Restore)


@dataclass(frozen=True, slots=True)
class Performed:
    """What the writes of one decision did."""

    decision: Decision
    mapped: Mapped | None = None
    written: Row | None = None
    """The destination as the write left it."""
    source_after: Row | None = None
    """The source as a write-back after a create left it."""
    create_announced: bool = False
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """What one performed decision adds to its batch's effects."""

    couplings: tuple[tuple[Coupling, Direction | None], ...] = ()
    uncoupled: tuple[Coupling, ...] = ()
    deleted: tuple[Source, ...] = ()
    resolved_intents: tuple[Source, ...] = ()
    resolved_writes: tuple[WriteTarget, ...] = ()
    cleared: tuple[Source, ...] = ()
    status: StatusChange | None = None
    error: ErrorRow | None = None
    failure: RecordFailed | None = None
    counts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Job id and counter names, counted as they are."""
    counts_if_uncoupled: tuple[tuple[Coupling, str, tuple[str, ...]], ...] = ()
    """Coupling, job id and counter names, counted if the commit removes the coupling."""
    recovered: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Job id and counter names of what an interrupted attempt did, counted
    now but not as the event's own: apart from its partition."""
    about: Decided | None = None
    """The record log's words of the decision, logged with each of ``counts``
    and ``counts_if_uncoupled`` that counts."""
    recovered_about: Decided | None = None
    """The record log's words of what an interrupted attempt did (``recovered``)."""

    def count_in(
        self, effects: BatchEffects, topic: str, partition: int, *, recovered_topic: str
    ) -> None:
        """Adds the counters to ``effects``, each with its record log entry:
        the event's own on its partition, an interrupted attempt's apart, on
        ``recovered_topic`` (each event of a partition counts once there)."""
        for job_id, names in self.counts:
            effects.count(job_id, topic, partition, *names, about=self.about)
        for coupling, job_id, names in self.counts_if_uncoupled:
            effects.count_if_uncoupled(coupling, job_id, topic, partition, *names, about=self.about)
        for job_id, names in self.recovered:
            effects.count(job_id, recovered_topic, 0, *names, about=self.recovered_about)


def record(
    mapping: TableMapping,
    f: Facts,
    done: Performed,
    previous: DueRecord | None,
    *,
    job_id: str,
    made_in: str | None,
    policy: RetryPolicy,
    now: datetime,
    retry: bool,
    raw: bytes,
) -> Record:
    """The effects of ``done`` on the record of ``f``, listed as ``previous``
    before; ``job_id`` counts it, ``made_in`` the pair its create made (see
    ``counts_made_pair``); ``retry``: the event is a retry of a listed record,
    whose encoding ``raw`` is kept with a listing."""
    d, event = done.decision, f.event
    source: Source = (event.side, event.record_id)
    direction = counted_towards(d, event.side)
    couplings: list[tuple[Coupling, Direction | None]] = []
    uncoupled: list[Coupling] = []
    deleted: list[Source] = []
    intents: list[Source] = []
    counts: list[tuple[str, tuple[str, ...]]] = []
    recovered: list[tuple[str, tuple[str, ...]]] = []
    status: NotSynced | None = None
    reason = message = ""
    # Settled unless listed as not synced. Decided again later (a retry of
    # the same event): what tablesync wrote to the record must still be known then.
    resolved, again = True, False
    if f.paired and isinstance(d, Remove | Uncouple):
        # Made (and counted) before it is removed, in the same commit.
        couplings.append((d.coupling, direction_of(event.side)))
    if counts_made_pair(f, d) and made_in is not None:
        recovered.append((made_in, ("inserted",)))
    match d:
        case Restore():
            made = restored(mapping, d, done.written)
            if made is not None:
                couplings.append((made, direction))
        case Create(matched=None) | Create(recovered=True):
            made = couple_created(mapping, event, d, done.written, done.source_after)
            if made is not None:
                couplings.append((made, direction))
                intents.append(source)
        case Create():
            couplings.append((couple_matched(mapping, event, d, done.written), direction))
            if f.intent is not None:
                # A create that a crash interrupted, settled by a match.
                intents.append(source)
        case Update():
            stamp = d.coupling.stamp_on(d.side)
            if done.written and f.destination_changed and f.destination is not None:
                # Changed since the last sync: synced as it was read, so the
                # version this write leaves (which carries that user's change
                # as well as tablesync's) flows back, while the events of the
                # versions before it stay behind.
                stamp = row_stamp(f.destination)
            elif done.written:
                stamp = row_stamp(done.written)
            couplings.append((d.coupling.with_stamp(d.side, stamp), direction))
        case Unchanged(coupling=coupling):
            if coupling is not None:
                couplings.append((coupling, None))
        case Remove(coupling=c):
            uncoupled.append(c)
            deleted.extend([("bc", c.bc_id), ("dataverse", c.dv_id)])
        case Uncouple(coupling=c, gone=gone):
            uncoupled.append(c)
            deleted.extend((side, c.id_on(side)) for side in gone)
        case MarkDeleted():
            couplings.append((d.coupling, None))
            resolved, status, reason, message = False, "skipped", "deleted", d.message
        case Pending():
            resolved, again, status, reason, message = False, True, "pending", "lookup", d.message
        case Fail():
            resolved, status, reason, message = False, "failed", "error", d.message
        case Skip(error=True):
            resolved, status, reason, message = False, "skipped", "conflict", d.message
        case Ignore() if f.blocked and event.op == "delete" and f.coupling is None:
            # Seen deleted while a create that made it waits to be settled.
            deleted.append(source)
        case Ignore() if f.source_gone and f.coupling is None:
            # Kept as deleted, so that no replay of it creates it on the other side.
            deleted.append(source)
        case Skip() | Ignore():
            pass
    listed = None
    if status is not None:
        listed = listing(previous, status, message, now, policy)
        if isinstance(d, Fail):
            given_up = listed.status == "skipped"
            again = not given_up
            if given_up and f.intent is not None and f.created_before is None:
                # Skipped until an operator acts: its announced create, of
                # which no record was found, may hold nothing back meanwhile.
                intents.append(source)
    if done.create_announced and done.refused:
        # Refused: nothing was created, so nothing may wait for it.
        intents.append(source)
    if f.intent is not None and not isinstance(d, Create | Pending | Fail):
        # Decided otherwise, after the create's record was looked for.
        intents.append(source)
    # Done, or refused by the API: either way no write is in flight.
    writes = list(f.announced.all)
    if (
        f.written_here
        and not again
        and (
            isinstance(d, Remove | Uncouple)
            or not echo_of_earlier_write(mapping, event.side, event.fields, f.written_here)
        )
    ):
        # Tablesync's own write to this record is settled by this decision:
        # unless a later write's echo is still to come to a pair that stays.
        writes.append((event.side, event.record_id, "update"))
    if f.written_there_by is not None and source in intents and not again:
        # Tablesync's own updates of the record this record's create made
        # are settled with that create: nothing reads their images later.
        writes.append(f.written_there_by)
    names = counters_of(d)
    if isinstance(d, Ignore) and f.source_gone:
        # A change in scope, counted as any later version of the record is
        # once its deletion is kept (``Facts.tombstoned``): as unchanged.
        names = ("unchanged",)
    if retry and not resolved and names and names[0] != "skipped":
        # A retry that failed again is already listed; counting it in
        # every interval would inflate the job log.
        names = ()
    counted_if_uncoupled: tuple[tuple[Coupling, str, tuple[str, ...]], ...] = ()
    if names and isinstance(d, Remove | Uncouple):
        counted_if_uncoupled = ((d.coupling, job_id, names),)
    elif names:
        counts.append((job_id, names))
    change = error = failure = None
    if listed is not None:
        destination = f.coupling.id_on(other_side(event.side)) if f.coupling else None
        held_by = mapping.name if f.blocked else None
        change = StatusChange(
            mapping=mapping.name,
            source_side=event.side,
            source_id=event.record_id,
            status=listed.status,
            reason=reason,
            message=message,
            destination_id=destination,
            next_attempt_at=listed.next_attempt_at,
            job_id=job_id,
            event=raw,
            waiting_for=waiting_for(done.mapped, held_by),
            same_failures=listed.same_failures,
            attempts=listed.attempts,
        )
        if listed.reported:
            towards = direction_of(event.side)
            error = ErrorRow(
                job_id, mapping.name, towards, event.side, event.record_id, destination, message
            )
            failure = RecordFailed(
                mapping=mapping.name,
                direction=towards,
                source_id=event.record_id,
                message=message,
                failed_at=now,
                job_id=job_id,
                destination_id=destination,
                attempts=listed.attempts,
                skipped=listed.status == "skipped",
            )
    about, recovered_about = _logged(f, d, couplings, uncoupled, message, now)
    # A deletion found flagged already (by an operator's find-deleted, or its
    # first event) is the errors list's "deleted" record: only restore,
    # delete-records or uncoupling takes it off, never its event seen again.
    stays_listed = event.op == "delete" and isinstance(d, Unchanged)
    return Record(
        couplings=tuple(couplings),
        uncoupled=tuple(uncoupled),
        deleted=tuple(deleted),
        resolved_intents=tuple(intents),
        resolved_writes=tuple(writes),
        cleared=(source,) if resolved and previous is not None and not stays_listed else (),
        status=change,
        error=error,
        failure=failure,
        counts=tuple(counts),
        counts_if_uncoupled=counted_if_uncoupled,
        recovered=tuple(recovered),
        about=about,
        recovered_about=recovered_about if recovered else None,
    )


def _logged(
    f: Facts,
    d: Decision,
    couplings: list[tuple[Coupling, Direction | None]],
    uncoupled: list[Coupling],
    message: str,
    now: datetime,
) -> tuple[Decided, Decided]:
    """The record log's words of ``d`` on the record of ``f``, and of the
    create an interrupted attempt made for it: the counterpart and company
    from the pair the decision leaves or removes, the direction and the names
    of the fields only of a write the decision made."""
    event = f.event
    pairs = [c for c, _ in couplings] + uncoupled
    pair = pairs[-1] if pairs else f.coupling
    other = other_side(event.side)
    counterpart = pair.id_on(other) if pair is not None else None
    company = pair.company if pair is not None else ""
    written: tuple[str, ...] = ()
    direction = None
    if operation_of(d) is not None:
        direction = written_towards(d)
        if isinstance(d, Create | Update | Restore):
            edited = d.edited if isinstance(d, Create) else frozenset()
            written = tuple(sorted(k for k in d.payload if k not in edited))
    if not message:
        match d:
            case Uncouple(message=text) | Skip(message=text):
                message = text
            case Ignore(reason=text):
                message = text
    about = Decided(
        event.side, event.record_id, now, counterpart, company, direction, written, message
    )
    made = Decided(
        event.side,
        event.record_id,
        now,
        counterpart,
        company,
        direction_of(event.side),
        message="created by an earlier attempt that was interrupted",
    )
    return about, made
