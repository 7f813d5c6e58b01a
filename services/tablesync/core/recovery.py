"""What an attempt that did not commit left behind, and what it means now.

Before tablesync writes, it announces the write in the state database: a
create as an intent (with the values it sends, and the new record's id where
the side takes the caller's), an update or a deletion of an existing record
as a write target, an update with the image it leaves on the record
(``fieldmap.written_image``). An attempt that dies between its writes and its
commit leaves those announcements open, and the next attempt of the same
records reads them here:

- a create whose record exists is not made twice: its record is found by id,
  or (BC picks its own ids, and the crash lost the answer) as the only
  uncoupled record created since the intent that looks like what was sent;
- a record changed since the last sync by a write that was announced is
  tablesync's own write, not a user's change (no conflict, no echo);
- a counterpart gone by a deletion that was announced was removed by
  tablesync: the pair is completed, not restored or reported."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from tablesync.core import catalog, filters
from tablesync.core.coupling_rules import key_of, row_stamp
from tablesync.core.couplings import Coupling, Stamp, compare_stamps
from tablesync.core.effects import Intent, WriteTarget
from tablesync.core.events import FieldValue, RecordChanged, Side, other_side
from tablesync.core.fieldmap import Mapped, changes, map_values, sent_values, written_image
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
from tablesync.core.outcome import write_target_of
from tablesync.core.plan import Create, Decision, FetchDestination, Update, made_by, stamp_of
from tablesync.core.records import Row

__all__ = [
    "INTENT_SLACK",
    "Announced",
    "Check",
    "announced_before",
    "announced_pair",
    "announcing",
    "destination_checks",
    "found_announced",
    "gone_check",
    "image_of",
    "made_records",
    "made_then_gone",
    "recent_query",
    "sent_by",
]

INTENT_SLACK = timedelta(seconds=5)
"""How far before an intent's time a recovered create may carry its stamp:
the API's clock and ours are different clocks."""

Check = tuple[WriteTarget, bool]
"""A write an attempt may have announced, and whether the record changed
(or went) since the last sync, as that write would have left it."""


@dataclass(frozen=True, slots=True)
class Announced:
    """What is known of the writes announced for one record's pair."""

    target: WriteTarget | None = None
    """The write this attempt announced, or one an attempt that did not commit
    announced and whose effect is seen on the record."""
    all: frozenset[WriteTarget] = frozenset()
    """Every announced write of the pair this attempt settles, written or not."""
    before: bool = False
    """An attempt that did not commit announced the same write (``target``)."""
    deleted_by_us: bool = False
    """The coupled counterpart is gone, deleted by an attempt that did not commit."""


# Creates


def recent_query(mapping: TableMapping, dest: Side, intents: Iterable[Intent]) -> filters.Expr:
    """The records of ``dest`` created (or changed) since the earliest of
    ``intents``: among them are the records those creates made."""
    since = min(i.created_at for i in intents) - INTENT_SLACK
    known = catalog.CATALOG.get((dest, mapping.table(dest)))
    # A custom table or page: the stamp every BC API page and every Dataverse table has.
    stamp_field = (
        known.modified_field
        if known is not None
        else ("lastModifiedDateTime" if dest == "bc" else "modifiedon")
    )
    return filters.Compare(stamp_field, filters.Op.GE, since)


def sent_by(
    intent: Intent, event: RecordChanged, mapping: TableMapping, mappings: MappingSet
) -> dict[str, FieldValue]:
    """What the create ``intent`` announced for ``event``'s record sent: as kept,
    or, for an intent announced before intents kept it, what a create of this
    version sends (its lookups unresolved)."""
    if intent.sent or event.op != "upsert":
        return intent.sent
    mapped = map_values(
        mapping, direction_of(event.side), event.fields, {}, mappings, creating=True
    )
    return sent_values(changes(mapped, other_side(event.side), None))


def made_records(
    sents: Sequence[Mapping[str, FieldValue]], recent: Sequence[Row], taken: Collection[str]
) -> list[Row | None]:
    """For each create (what it sent), the record it made among ``recent``
    records; ``taken`` are ids coupled or named by other intents already. A
    record is given to one create at most, in order."""
    free = [r for r in recent if r.id not in taken]
    made: list[Row | None] = []
    for sent in sents:
        row = made_by(sent, free)
        made.append(row)
        if row is not None:
            free.remove(row)
    return made


def gone_check(intent: Intent, created_before: Row | None, dest: Side) -> WriteTarget | None:
    """The deletion to look for, of a record an announced create named but that
    is not found: an attempt that settled this very intent may have deleted it."""
    if created_before is None and intent.dest_id:
        return (dest, intent.dest_id, "delete")
    return None


def made_then_gone(
    intent: Intent | None, created_before: Row | None, *, seen_deleted: bool = False
) -> bool:
    """Whether the record an announced create made is gone since: the side
    answered that it made it (or its deletion was seen: ``seen_deleted``, so it
    was made even if the answer was lost), and it is not found by its id. Its
    pair was made, and one of the pair deleted: never a record to create again."""
    return (
        intent is not None
        and (intent.made or seen_deleted)
        and intent.dest_id is not None
        and created_before is None
    )


def announced_pair(
    mapping: TableMapping,
    event: RecordChanged,
    intent: Intent,
    created_before: Row | None,
    *,
    gone: bool,
) -> Coupling | None:
    """The pair an announced create made: with the record found
    (``created_before``), or with the one it named that is known to be gone
    since (``gone``: made then deleted, or deleted by tablesync). None when it
    made none."""
    dest = other_side(event.side)
    if created_before is not None:
        dest_id, stamp = created_before.id, row_stamp(created_before)
    elif intent.dest_id and gone:
        dest_id, stamp = intent.dest_id, Stamp(intent.created_at, None)
    else:
        return None
    ids: dict[Side, str] = {event.side: event.record_id, dest: dest_id}
    stamps = {event.side: stamp_of(event), dest: stamp}
    key = key_of(mapping, created_before.fields) if created_before and dest == "bc" else None
    return Coupling.between(mapping.name, ids, stamps, key)


# Updates and deletions


def destination_checks(
    event: RecordChanged, t: FetchDestination, destination: Row | None, *, deleting: bool
) -> tuple[bool, tuple[Check, ...]]:
    """Whether the coupled ``destination`` (as read now; None: gone) changed
    since the last sync, and the announced writes to look for."""
    source: tuple[Side, str] = (event.side, event.record_id)
    counterpart: tuple[Side, str] = (t.side, t.record_id)
    checks: list[Check] = []
    if destination is None and deleting:
        # Both gone: either may be a deletion of tablesync's own.
        checks.append(((*counterpart, "delete"), True))
        checks.append(((*source, "delete"), True))
    if destination is not None and not deleting:
        now = row_stamp(destination)
        newer = compare_stamps(t.side, now, t.coupling.stamp_on(t.side)) == "newer"
        return newer, (*checks, ((*counterpart, "update"), newer))
    # A record gone or going: an update announced for it has nothing left to
    # decide, and no later event would close it.
    checks.append(((*counterpart, "update"), False))
    if deleting:
        checks.append(((*source, "update"), False))
    elif destination is None:
        # A version of a record whose counterpart vanished: perhaps by
        # tablesync's own hand, the pair half removed.
        checks.append(((*counterpart, "delete"), False))
    return False, tuple(checks)


def found_announced(
    known: Announced,
    checks: Iterable[Check],
    ours: Collection[WriteTarget],
    *,
    deleting: bool,
    own: Collection[WriteTarget] = (),
) -> Announced:
    """``known`` with the ``checks`` that attempts announced (``ours``): each is
    settled by this attempt, written or not; the first whose record changed
    is that attempt's write. ``own``: the writes this attempt announced
    itself, earlier in its batch: settled with it, but no other attempt's."""
    target, found, before = known.target, set(known.all), known.before
    deleted_by_us = known.deleted_by_us
    for key, changed in checks:
        if key not in ours:
            continue
        if key[2] == "delete" and not deleting:
            deleted_by_us = True
        found.add(key)
        if changed and not before and key not in own:
            before, target = True, key
    return Announced(target, frozenset(found), before, deleted_by_us)


def announcing(known: Announced, d: Decision) -> Announced:
    """``known`` once the write ``d`` makes to an existing record (if any) is
    to be announced: that write is the target now."""
    target = write_target_of(d) or known.target
    if target is None:
        return known
    return Announced(target, known.all | {target}, known.before, known.deleted_by_us)


def announced_before(known: Announced, earlier: Collection[WriteTarget]) -> Announced:
    """``known`` once its target is announced, ``earlier`` being the targets an
    attempt that did not commit had announced already."""
    return Announced(known.target, known.all, known.target in earlier, known.deleted_by_us)


def image_of(
    mapping: TableMapping, d: Decision, mapped: Mapped | None, destination: Row | None
) -> dict[str, FieldValue] | None:
    """What an update leaves on the record it writes, kept with its
    announcement: read back later, those values are tablesync's, not a user's."""
    if isinstance(d, Update) and mapped is not None and destination is not None:
        return written_image(mapping, d.side, mapped, destination.fields)
    if isinstance(d, Create) and d.matched is not None and d.payload and mapped is not None:
        return written_image(mapping, d.side, mapped, d.matched.fields)
    return None
