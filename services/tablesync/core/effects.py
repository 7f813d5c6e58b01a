"""What one batch changes in the state, and the rules of writing it.

A batch's effects — couplings, job counters, error rows, the record log,
per-record retry status, intents resolved and the position reached on each
partition — are committed together by whichever state adapter holds them; the rules of what
they mean (which entry of a record wins, which of two removals of one
coupling counts, which uncoupled records may be tablesync's own creates) are
here, so every adapter keeps them alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tablesync.core.couplings import Coupling
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import looks_sent, same_value

__all__ = [
    "MESSAGE_LIMIT",
    "BatchEffects",
    "Decided",
    "DueRecord",
    "ErrorRow",
    "IfUncoupled",
    "Intent",
    "LogEntry",
    "StatusChange",
    "WriteTarget",
    "blocking",
    "counted_removals",
    "latest_couplings",
    "made_so_far",
    "taken_over",
]

WriteTarget = tuple[Side, str, Literal["update", "delete"]]
"""A record tablesync is about to update or delete: side, id, kind."""


MESSAGE_LIMIT = 2048
"""The characters of a message the state keeps (error rows, record log rows)."""


@dataclass(frozen=True, slots=True)
class ErrorRow:
    job_id: str
    mapping: str
    direction: str
    source_side: Side
    source_id: str
    destination_id: str | None
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of the record log: a record's decision, in the job it counted
    in, with the counters it added to there (``decision``). Names of the fields
    written only, never their values."""

    mapping: str
    company: str
    source_side: Side
    source_id: str
    counterpart_id: str | None
    job_id: str
    decision: tuple[str, ...]
    direction: str | None
    """The direction written; None when nothing was written."""
    fields: tuple[str, ...]
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Decided:
    """What the record log says of a decision beyond its job and counters,
    which come from the counting (``BatchEffects.count``)."""

    source_side: Side
    source_id: str
    at: datetime
    counterpart_id: str | None = None
    company: str = ""
    direction: str | None = None
    fields: tuple[str, ...] = ()
    message: str = ""

    def entry(self, mapping: str, job_id: str, names: Sequence[str]) -> LogEntry:
        return LogEntry(
            mapping=mapping,
            company=self.company,
            source_side=self.source_side,
            source_id=self.source_id,
            counterpart_id=self.counterpart_id,
            job_id=job_id,
            decision=tuple(names),
            direction=self.direction,
            fields=self.fields,
            message=self.message,
            at=self.at,
        )


IfUncoupled = tuple[Coupling, tuple[str, str, int], tuple[str, ...], Decided | None]
"""A coupling, the (job, topic, partition) counted in, the counter names and
the record log's words of the decision: counted only if the commit removes it."""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A record that did not sync this time: pending, failed (retried) or skipped."""

    mapping: str
    source_side: Side
    source_id: str
    status: str
    reason: str
    message: str
    destination_id: str | None
    next_attempt_at: datetime | None
    job_id: str | None
    event: bytes
    waiting_for: tuple[str, ...] = ()
    same_failures: int = 1
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Intent:
    """A create announced before the destination API was called."""

    mapping: str
    source_side: Side
    source_id: str
    dest_id: str | None
    created_at: datetime
    sent: dict[str, FieldValue] = field(default_factory=dict)
    """The values the create sent (``fieldmap.sent_values``); empty for an
    intent announced before they were kept, which then matches any record."""
    made: bool = False
    """The side answered that the create made ``dest_id``: that record missing
    later was deleted since, not never made."""


@dataclass(frozen=True, slots=True)
class DueRecord:
    mapping: str
    source_side: Side
    source_id: str
    status: str
    message: str
    attempts: int
    same_failures: int
    event: bytes


@dataclass
class BatchEffects:
    """What one batch changes in the state database."""

    mapping: str
    # With the direction of the write they record; None keeps the last one.
    couplings: list[tuple[Coupling, str | None]] = field(default_factory=list)
    uncoupled: list[Coupling] = field(default_factory=list)
    resolved_intents: list[tuple[Side, str]] = field(default_factory=list)
    resolved_writes: list[WriteTarget] = field(default_factory=list)
    deleted: list[tuple[Side, str]] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    cleared: list[tuple[Side, str]] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    counters: dict[tuple[str, str, int], Counter[str]] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    """The record log's rows: one per decision counted, added by ``count``."""
    if_uncoupled: list[IfUncoupled] = field(default_factory=list)
    """Counters that count only if this commit is the one that removes the coupling:
    two attempts racing on one coupling (its two records' events on two partitions)
    must not both count its deletion. Their log entries are written as they count."""
    finished: list[tuple[str, str, int]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    epochs: dict[tuple[str, int], int] = field(default_factory=dict)
    """The epoch this instance holds each partition of the batch under: the
    commit is refused (``errors.Fenced``) where another has taken one since."""
    announced: set[WriteTarget] = field(default_factory=set)
    """Writes this batch announced that no attempt had announced before it:
    read back within the batch, their effect is its own (committed with it),
    never a lost commit's. Not stored."""
    deletions_read: set[tuple[Side, str]] = field(default_factory=set)
    """Records (side, lower-case id) whose deletion is among the batch's events:
    known deleted to every part of the batch, whichever is decided first. Not
    stored: the deletions themselves are, as their events are applied."""

    def absorb(self, other: BatchEffects) -> None:
        """Adds the effects of another part of the same batch."""
        self.couplings.extend(other.couplings)
        self.uncoupled.extend(other.uncoupled)
        self.resolved_intents.extend(other.resolved_intents)
        self.resolved_writes.extend(other.resolved_writes)
        self.deleted.extend(other.deleted)
        self.statuses.extend(other.statuses)
        self.cleared.extend(other.cleared)
        self.errors.extend(other.errors)
        for key, counter in other.counters.items():
            self.counters.setdefault(key, Counter()).update(counter)
        self.log.extend(other.log)
        self.if_uncoupled.extend(other.if_uncoupled)
        self.finished.extend(other.finished)
        self.positions.update(other.positions)
        self.epochs.update(other.epochs)
        self.announced |= other.announced

    def count(
        self,
        job_id: str,
        topic: str,
        partition: int,
        *names: str,
        about: Decided | None = None,
    ) -> None:
        """Adds ``names`` to the job's counters of the partition; with
        ``about``, logs the decision they count, in the same place, so the
        record log and the counters never tell two stories."""
        counter = self.counters.setdefault((job_id, topic, partition), Counter())
        for name in names:
            counter[name] += 1
        if about is not None and names:
            self.log.append(about.entry(self.mapping, job_id, names))

    def count_if_uncoupled(
        self,
        coupling: Coupling,
        job_id: str,
        topic: str,
        partition: int,
        *names: str,
        about: Decided | None = None,
    ) -> None:
        self.if_uncoupled.append((coupling, (job_id, topic, partition), names, about))

    def empty(self) -> bool:
        return not (
            self.couplings
            or self.uncoupled
            or self.resolved_intents
            or self.resolved_writes
            or self.deleted
            or self.statuses
            or self.cleared
            or self.errors
            or self.counters
            or self.log
            or self.if_uncoupled
            or self.finished
            or self.positions
        )


def latest_couplings(
    couplings: Sequence[tuple[Coupling, str | None]],
) -> list[tuple[Coupling, str | None]]:
    """One entry per record: the batch's last decision about it, with the
    direction of its last write. Two entries naming one record would land in
    the order they are written, an older over a newer perhaps (a Dataverse row
    is coupled once: writing one replaces any other)."""
    entries: dict[int, tuple[Coupling, str | None]] = {}
    last_of: dict[tuple[str, str], int] = {}
    for n, (coupling, direction) in enumerate(couplings):
        bc_id, dv_id = coupling.bc_id.lower(), coupling.dv_id.lower()
        kept = direction
        for record in (("bc", bc_id), ("dataverse", dv_id)):
            earlier = entries.pop(last_of.get(record, -1), None)
            if earlier is not None and kept is None and earlier[0].bc_id.lower() == bc_id:
                kept = earlier[1]
        entries[n] = (coupling, kept)
        last_of[("bc", bc_id)] = last_of[("dataverse", dv_id)] = n
    return list(entries.values())


def made_so_far(effects: BatchEffects) -> dict[tuple[Side, str], Coupling | None]:
    """The couplings a batch has made or removed so far, by record (None:
    removed). Not committed yet, they are made: a later chunk of the batch
    decides on them, not on what the state database holds."""
    made: dict[tuple[Side, str], Coupling | None] = {}
    for c, _ in effects.couplings:
        made[("bc", c.bc_id)] = made[("dataverse", c.dv_id)] = c
    for c in effects.uncoupled:
        made[("bc", c.bc_id)] = made[("dataverse", c.dv_id)] = None
    return made


def counted_removals(
    if_uncoupled: Iterable[IfUncoupled],
    removed: set[tuple[str, str]],
) -> list[tuple[tuple[str, str, int], tuple[str, ...], Decided | None]]:
    """The counters of ``if_uncoupled`` that count, with their log entry's
    words: those of a coupling this commit removed (``removed``: mapping and
    lower-case BC id), once per coupling. Of two decisions on one coupling,
    the deletion is the one to count."""
    counted: set[tuple[str, str]] = set()
    out: list[tuple[tuple[str, str, int], tuple[str, ...], Decided | None]] = []
    for coupling, key, names, about in sorted(if_uncoupled, key=lambda c: "deleted" not in c[2]):
        ident = (coupling.mapping, coupling.bc_id.lower())
        if ident in removed and ident not in counted:
            counted.add(ident)
            out.append((key, names, about))
    return out


def blocking(
    intents: Iterable[Intent],
    records: Sequence[tuple[str, Mapping[str, FieldValue]]],
    *,
    key: str | None = None,
) -> set[str]:
    """Of ``records`` (uncoupled records on the side ``intents`` create on: id
    and values), those that may be records tablesync is creating right now:
    named by an open intent, looking like what an intent whose id is not
    known yet sent, or holding the value it sent in ``key``, a field the side
    keeps unique (BC's number or code): a user may have edited every other
    field of the record that create made since."""
    intents = list(intents)
    named = {i.dest_id for i in intents if i.dest_id is not None}
    unnamed = [i.sent for i in intents if i.dest_id is None]
    keys = [v for sent in unnamed if key and isinstance(v := sent.get(key), str) and v.strip()]
    return {
        rid
        for rid, fields in records
        if rid in named
        or any(looks_sent(sent, fields) for sent in unnamed)
        or (key is not None and any(same_value(k, fields.get(key), code=True) for k in keys))
    }


def taken_over(
    epochs: Mapping[tuple[str, int], int], current: Mapping[tuple[str, int], int]
) -> list[tuple[str, int]]:
    """The partitions held under ``epochs`` whose epoch is another now (taken
    by another instance since, or never taken): their work is not this
    holder's to write or commit."""
    return sorted(tp for tp, epoch in epochs.items() if current.get(tp) != epoch)
