"""What to do with one captured change: the sync rules as pure functions.

Planning a change takes two steps because the rules need facts only the
sides can tell. ``triage`` looks at the event, the mapping, the job and the
coupling, and either decides at once (ignore, unchanged, a deletion policy)
or says what to fetch: the coupled destination row, or the candidates for
match-based coupling. ``decide_coupled`` / ``decide_uncoupled`` /
``decide_deletion`` then decide with those facts. The runtime performs the
decision and records its effects; nothing here does I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tablesync.core import filters
from tablesync.core.couplings import Coupling, Stamp, compare_stamps
from tablesync.core.events import Direction, FieldValue, RecordChanged, Side, other_side
from tablesync.core.fieldmap import Mapped, changes, edited_since, identifies, looks_sent
from tablesync.core.mappings import TableMapping, direction_of
from tablesync.core.records import Row, WriteValue

__all__ = [
    "COUNTED",
    "Create",
    "Decision",
    "Fail",
    "FetchCandidates",
    "FetchDestination",
    "Ignore",
    "JobContext",
    "MarkDeleted",
    "Pending",
    "Remove",
    "Restore",
    "Skip",
    "Triage",
    "Unchanged",
    "Uncouple",
    "Update",
    "at_rest_winner",
    "counters_of",
    "decide_coupled",
    "decide_deletion",
    "decide_uncoupled",
    "deterministic_id",
    "left_to_way_back",
    "made_by",
    "row_of",
    "stamp_of",
    "triage",
]

_ID_NAMESPACE = uuid.UUID("5f0c6d1e-2b7a-4c1e-9a43-7461626c6573")


def deterministic_id(mapping: str, source: Side, source_id: str) -> str:
    """The id a record restored on Dataverse gets, so a restore replayed after a
    crash finds the record it made (the id names the deletion it answers)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{mapping}:{source}:{source_id.lower()}"))


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job an event counts toward and what the job changes about the rules."""

    job_id: str | None
    kind: str
    ignore_only_coupled: bool = False
    # A replay applies a version again though it was applied before (the
    # mapping changed since); an older version still never wins.
    reapply: bool = False
    # The direction the job counts; a write the other way (a deletion of the
    # event's own record, say) counts in the continuous job of its direction.
    direction: Direction | None = None
    # BC's unconditional full synchronization: a coupled record is compared
    # with its counterpart even when its version is the one last synced, so a
    # field mapping added or fixed since reaches every coupled record.
    unconditional: bool = False
    # BC's match-based coupling: uncoupled records are coupled to the one
    # record of the other side their match fields find, nothing else is
    # changed unless asked: ``create_unmatched`` creates those without a
    # match, ``sync_after`` writes the mapped values to what is coupled.
    coupling_run: bool = False
    create_unmatched: bool = False
    sync_after: bool = False


def stamp_of(event: RecordChanged) -> Stamp:
    return Stamp(event.modified_at, event.etag)


def row_of(event: RecordChanged) -> Row:
    return Row(event.record_id, event.modified_at, event.etag, event.fields, event.modified_by)


# Decisions that need no further facts.


@dataclass(frozen=True, slots=True)
class Ignore:
    """Not this mapping's business (direction, filter, only-coupled): not counted,
    unless ``counted`` names the counter (a coupling run's unmatched records)."""

    reason: str
    counted: str | None = None


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Nothing to write; ``coupling`` (when set) is the coupling with refreshed stamps."""

    coupling: Coupling | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A lookup target is not coupled yet: retried later, never written half-resolved."""

    message: str


@dataclass(frozen=True, slots=True)
class Fail:
    message: str
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Skip:
    """Deliberately not synced: the losing side of a conflict, or a conflict under ``none``."""

    message: str
    error: bool


# Decisions that need a fetch first.


@dataclass(frozen=True, slots=True)
class FetchDestination:
    """Read the coupled record on ``side`` (conflict check, diff, or restore source)."""

    side: Side
    record_id: str
    coupling: Coupling
    # Read only because the job is unconditional: the record's version is the
    # one last synced, so it carries no change of its own.
    unconditional: bool = False


@dataclass(frozen=True, slots=True)
class FetchCandidates:
    """Uncoupled: look for a match on ``side`` (and a record created before a crash)."""

    side: Side
    filter: filters.Expr | None
    # The job's coupling run, when it is one: match, couple, create only if asked.
    coupling_run: JobContext | None = None


Triage = Ignore | Unchanged | FetchDestination | FetchCandidates | Pending


# Decisions that write.


@dataclass(frozen=True, slots=True)
class Create:
    """Create on ``side`` and couple; with ``matched``, couple to that existing record
    (``record_id`` is its id) and write ``payload`` to it. A new record's id is left to
    the runtime, which announces it with the create's intent where the side accepts a
    caller's id, so a create replayed after a crash finds the record it made."""

    side: Side
    payload: dict[str, WriteValue]
    record_id: str | None
    source_id: str
    source_stamp: Stamp
    matched: Row | None = None
    # The destination record is one this record's own create made before a
    # crash: it counts as inserted, not as coupled by match.
    recovered: bool = False
    # Fields a user changed on that recovered record since the create made it:
    # not written over, and its version not taken as synced, so they flow back.
    edited: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Update:
    """Write ``payload`` to the coupled record; ``coupling`` carries the new source stamp."""

    side: Side
    record_id: str
    payload: dict[str, WriteValue]
    etag: str | None
    coupling: Coupling
    newly_coupled: bool = False


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the counterpart of a deleted record and the coupling (deletion policy ``delete``)."""

    side: Side
    record_id: str
    coupling: Coupling


@dataclass(frozen=True, slots=True)
class Restore:
    """Re-create the deleted record on ``side`` from the survivor and couple it anew."""

    side: Side
    payload: dict[str, WriteValue]
    record_id: str | None
    coupling: Coupling


@dataclass(frozen=True, slots=True)
class Uncouple:
    coupling: Coupling
    message: str
    gone: tuple[Side, ...] = ()
    """The sides whose record no longer exists."""


@dataclass(frozen=True, slots=True)
class MarkDeleted:
    """Deletion policy ``none``: keep the coupling, flag it, report it."""

    coupling: Coupling
    message: str


Decision = (
    Ignore
    | Unchanged
    | Pending
    | Fail
    | Skip
    | Create
    | Update
    | Remove
    | Restore
    | Uncouple
    | MarkDeleted
)

COUNTED = (
    "inserted",
    "modified",
    "deleted",
    "unchanged",
    "skipped",
    "failed",
    "pending",
    "coupled",
    "uncoupled",
    "unmatched",
)


def counters_of(decision: Decision) -> tuple[str, ...]:
    """The job counters a decision adds to once performed (none: not counted)."""
    match decision:
        case Ignore(counted=counted):
            return (counted,) if counted else ()
        case Unchanged():
            return ("unchanged",)
        case Pending():
            return ("pending",)
        case Fail():
            return ("failed",)
        case Skip() | MarkDeleted():
            return ("skipped",)
        case Create(matched=None) | Create(recovered=True) | Restore():
            return ("inserted",)
        case Create(payload=payload):
            return ("modified" if payload else "unchanged", "coupled")
        case Update():
            return ("modified",)
        case Remove():
            return ("deleted", "uncoupled")
        case Uncouple():
            return ("uncoupled",)
    return ()


def triage(
    event: RecordChanged, mapping: TableMapping, job: JobContext, coupling: Coupling | None
) -> Triage:
    """The first look at an event: decide now, or say what must be fetched."""
    side = event.side
    if job.coupling_run and event.op == "delete":
        return Ignore("a coupling run couples records that exist")
    if event.op == "delete":
        if coupling is None:
            return Ignore("deleted record was not coupled")
        already_flagged = coupling.bc_deleted if side == "bc" else coupling.dv_deleted
        if already_flagged and mapping.deletion == "none":
            return Unchanged()
        return FetchDestination(other_side(side), coupling.id_on(other_side(side)), coupling)
    direction = direction_of(side)
    if not mapping.allows(direction):
        return Ignore(f"{mapping.name} does not sync {direction}")
    if not filters.evaluate(mapping.filter(side), event.fields, ignore_case=side == "dataverse"):
        return Ignore("outside the mapping's filter")
    if coupling is not None and job.coupling_run:
        return Unchanged()  # coupled already: a coupling run changes nothing of it
    if coupling is not None:
        fresh = compare_stamps(side, stamp_of(event), coupling.stamp_on(side))
        # A replay applies a version again only where it was the source of the
        # last write: the same version on the other side is that write's echo.
        reapply = job.reapply and coupling.last_direction == direction
        dest = other_side(side)
        if fresh == "same" and not reapply and job.unconditional:
            return FetchDestination(dest, coupling.id_on(dest), coupling, unconditional=True)
        if fresh == "older" or (fresh == "same" and not reapply):
            return Unchanged()
        return FetchDestination(dest, coupling.id_on(dest), coupling)
    if mapping.sync_only_coupled and not job.ignore_only_coupled and not job.coupling_run:
        return Ignore("not coupled and the mapping syncs only coupled records")
    return FetchCandidates(other_side(side), None, job if job.coupling_run else None)


def _unresolved(mapped: Mapped) -> Pending | Fail | None:
    if not mapped.unresolved:
        return None
    messages = "; ".join(u.message for u in mapped.unresolved)
    if all(u.retryable for u in mapped.unresolved):
        return Pending(messages)
    return Fail(messages)


def _conflict_winner(mapping: TableMapping) -> Side | None:
    if mapping.update_conflict == "get_from_integration":
        return "dataverse"
    if mapping.update_conflict == "send_to_integration":
        return "bc"
    return None


def at_rest_winner(mapping: TableMapping) -> Side:
    """Of two coupled records that both kept the version last synced yet
    disagree on a field both directions carry (a field mapping added since),
    the side whose value an unconditional full synchronization writes: the
    conflict policy's side, and BC's (the first step) when the policy is
    ``none``, since nobody changed anything there is no conflict to report."""
    return _conflict_winner(mapping) or "bc"


def left_to_way_back(
    mapping: TableMapping, side: Side, mapped: Mapped, *, destination_changed: bool
) -> Mapped:
    """What an unconditional step from ``side`` writes of the mapped values of
    a record that has no change of its own since the last sync.

    Fields the mapping carries back too are left to the other direction when
    the counterpart changed since the last sync (its value is the newer one
    and syncs back) or when the other side is the ``at_rest_winner``; the
    rest are this direction's alone and are written."""
    dest = other_side(side)
    back = direction_of(dest)
    if not mapping.allows(back):
        return mapped
    if not destination_changed and at_rest_winner(mapping) == side:
        return mapped
    carried_back = set(mapping.fields_for(back))
    return replace(mapped, values=tuple((f, v) for f, v in mapped.values if f not in carried_back))


def decide_coupled(
    event: RecordChanged,
    mapping: TableMapping,
    coupling: Coupling,
    destination: Row,
    mapped: Mapped,
    *,
    unconditional: bool = False,
) -> Decision:
    """A newer version of a coupled record, with its counterpart as it is now;
    with ``unconditional``, the version last synced, compared all the same."""
    side, dest = event.side, other_side(event.side)
    problem = _unresolved(mapped)
    if problem is not None:
        return problem
    dest_changed = (
        compare_stamps(
            dest, Stamp(destination.modified_at, destination.etag), coupling.stamp_on(dest)
        )
        == "newer"
    )
    if unconditional:
        mapped = left_to_way_back(mapping, side, mapped, destination_changed=dest_changed)
    payload = changes(mapped, dest, destination.fields)
    refreshed = coupling.with_stamp(side, stamp_of(event))
    if not payload:
        return Unchanged(refreshed)
    if dest_changed:
        winner = _conflict_winner(mapping)
        if winner is None:
            changed = (
                f"changed in {_side_name(dest)} since the last sync (an unconditional sync "
                f"compares it with the unchanged {_side_name(side)} record)"
                if unconditional
                else "changed in both Business Central and Dataverse since the last sync"
            )
            return Skip(
                f"{changed}; {mapping.name} resolves update conflicts with 'none'",
                error=True,
            )
        if winner != side:
            return Skip(
                f"update conflict: {_side_name(winner)} wins ({mapping.update_conflict})",
                error=False,
            )
    return Update(dest, destination.id, payload, destination.etag, refreshed)


def at_rest(
    decision: Decision,
    event: RecordChanged,
    mapping: TableMapping,
    destination: Row,
    mapped_back: Mapped | None,
    *,
    ours: bool = False,
) -> Decision:
    """An update that found nothing to write, its destination changed since
    the last sync: when that change is tablesync's own write whose commit a
    crash lost (``ours``: the write was announced), or when nothing would
    flow back either, both records are at rest and the destination's
    version is recorded on the coupling too. Otherwise that write would come
    back as a user's change and win a conflict against a newer one.

    ``mapped_back`` is the destination mapped towards the event's side (None
    when it could not be mapped)."""
    if not isinstance(decision, Unchanged) or decision.coupling is None:
        return decision
    dest = other_side(event.side)
    now = Stamp(destination.modified_at, destination.etag)
    if compare_stamps(dest, now, decision.coupling.stamp_on(dest)) != "newer":
        return decision
    if (
        not ours
        and mapping.allows(direction_of(dest))
        and (
            mapped_back is None
            or mapped_back.unresolved
            or changes(mapped_back, event.side, event.fields)
        )
    ):
        return decision
    return Unchanged(decision.coupling.with_stamp(dest, now))


def decide_uncoupled(
    event: RecordChanged,
    mapping: TableMapping,
    mapped: Mapped,
    candidates: list[Row],
    *,
    created_before: Row | None = None,
    sent: Mapping[str, FieldValue] | None = None,
    written: Sequence[Mapping[str, FieldValue]] = (),
    blocked_by_intent: bool = False,
    announced: bool = False,
    job: JobContext | None = None,
) -> Decision:
    """An uncoupled record that may be created on the other side (only-coupled is off).

    ``candidates`` are the uncoupled destination records matching the
    mapping's match fields; ``created_before`` is the destination record a
    create of this very record made before a crash, ``sent`` what that create
    sent (``written``: what tablesync's own updates of it left since): a field
    of it that holds another value now was changed by a user since, and that
    change is kept (invariant 9)."""
    dest = other_side(event.side)
    if blocked_by_intent:
        return Pending("created by tablesync a moment ago; waiting for its coupling")
    if job is not None and job.coupling_run and created_before is None:
        coupled = _coupled_by_match(event, mapping, mapped, candidates, job)
        if coupled is not None:
            return coupled
    problem = _unresolved(mapped)
    if problem is not None:
        return problem
    found = created_before
    if found is None and mapping.match:
        if len(candidates) > 1:
            return Fail(
                f"{len(candidates)} uncoupled {mapping.table(dest)} match on "
                f"{', '.join(m.bc + '/' + m.dataverse for m in mapping.match)}: "
                "no unique uncoupled matching record"
            )
        if candidates:
            found = candidates[0]
    if found is not None:
        # A record this record's own create made (found by id, by what it
        # sent, or by the match once a user changed it): what a user changed
        # on it since is theirs.
        ours = created_before is not None or announced
        edited = edited_since(sent, found.fields, written) if ours and sent else frozenset()
        payload = changes(mapped, dest, found.fields)
        return Create(
            dest,
            {name: value for name, value in payload.items() if name not in edited},
            found.id,
            event.record_id,
            stamp_of(event),
            matched=found,
            # An announced create that a crash interrupted made the record
            # the match finds (when its values no longer told it apart).
            recovered=created_before is not None or announced,
            edited=edited,
        )
    return Create(dest, changes(mapped, dest, None), None, event.record_id, stamp_of(event))


def _coupled_by_match(
    event: RecordChanged,
    mapping: TableMapping,
    mapped: Mapped,
    candidates: list[Row],
    job: JobContext,
) -> Decision | None:
    """A coupling run's decision on an uncoupled record: coupled to its one
    match (its values written only with ``sync_after``), an ambiguous match
    failed and listed, no match counted unmatched; None where the record is
    to be created (``create_unmatched``), as a full synchronization would."""
    dest = other_side(event.side)
    if not mapping.match:
        return Fail(f"{mapping.name} has no match fields: a coupling run cannot match its records")
    if len(candidates) > 1:
        return Fail(
            f"{len(candidates)} uncoupled {mapping.table(dest)} match on "
            f"{', '.join(m.bc + '/' + m.dataverse for m in mapping.match)}: "
            "no unique uncoupled matching record"
        )
    if not candidates:
        if job.create_unmatched:
            return None
        return Ignore(f"no uncoupled {mapping.table(dest)} matches", counted="unmatched")
    found = candidates[0]
    if job.sync_after:
        problem = _unresolved(mapped)
        if problem is not None:
            return problem
    payload = changes(mapped, dest, found.fields) if job.sync_after else {}
    return Create(dest, payload, found.id, event.record_id, stamp_of(event), matched=found)


def made_by(sent: Mapping[str, FieldValue], candidates: Sequence[Row]) -> Row | None:
    """The record that a create of ``sent``, whose answer a crash lost, made:
    the only uncoupled candidate that looks like it. With two look-alikes
    neither is taken, since taking a user's record would couple it (or delete
    it with a deleted source); values that tell nothing apart find nothing."""
    if not identifies(sent):
        return None
    alike = [row for row in candidates if looks_sent(sent, row.fields)]
    return alike[0] if len(alike) == 1 else None


def decide_deletion(
    mapping: TableMapping,
    coupling: Coupling,
    gone: Side,
    survivor: Row | None,
    mapped_survivor: Mapped | None,
    *,
    deleted_here: Side | None = None,
) -> Decision:
    """The coupled record on ``gone`` no longer exists; ``survivor`` is its
    counterpart now. ``deleted_here``: both are gone, and the record on that
    side was being deleted by tablesync itself (an attempt that did not commit)."""
    keep = other_side(gone)
    where = _side_name(gone)
    if survivor is None and deleted_here is not None:
        return Remove(deleted_here, coupling.id_on(deleted_here), coupling)
    if survivor is None:
        return Uncouple(
            coupling, f"deleted in both {_side_name('bc')} and Dataverse", ("bc", "dataverse")
        )
    towards_keep: Direction = direction_of(gone)
    towards_gone: Direction = direction_of(keep)
    if mapping.deletion == "remove_coupling":
        return Uncouple(coupling, f"deleted in {where}; coupling removed", (gone,))
    if mapping.deletion == "delete" and mapping.allows(towards_keep):
        return Remove(keep, survivor.id, coupling)
    if mapping.deletion == "restore" and mapping.allows(towards_gone) and mapped_survivor:
        problem = _unresolved(mapped_survivor)
        if problem is not None:
            return problem
        record_id = (
            deterministic_id(mapping.name, keep, f"{survivor.id}:{coupling.id_on(gone)}")
            if gone == "dataverse"
            else None
        )
        return Restore(gone, changes(mapped_survivor, gone, None), record_id, coupling)
    flagged = (
        replace(coupling, bc_deleted=True) if gone == "bc" else replace(coupling, dv_deleted=True)
    )
    return MarkDeleted(
        flagged,
        f"the coupled record was deleted in {where}; its counterpart in "
        f"{_side_name(keep)} was kept ({mapping.name} deletion policy '{mapping.deletion}')",
    )


def _side_name(side: Side) -> str:
    return "Business Central" if side == "bc" else "Dataverse"
