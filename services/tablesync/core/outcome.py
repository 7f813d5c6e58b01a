"""What a decision writes, and what the side's answer to that write means.

A writing decision becomes one operation on one side (``operation_of``,
``write_side``). The answer is sorted into what happened (``absorb``): the
record is written; the decision must be made again on fresh facts (a stale
ETag, a counterpart that vanished); or the record fails, retried or not. An
answer that says the side itself is unavailable (throttled past the
connector's retries, a server fault, no connection) fails no record: the
whole batch is tried again (``first_unavailable``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeGuard

from tablesync.core.effects import WriteTarget
from tablesync.core.events import Direction, Side, other_side
from tablesync.core.mappings import direction_of
from tablesync.core.plan import Create, Decision, Fail, Remove, Restore, Uncouple, Update
from tablesync.core.records import Create as CreateOp
from tablesync.core.records import Delete as DeleteOp
from tablesync.core.records import Missing, Rejected, Row, Stale, WriteOp, WriteResult, Written
from tablesync.core.records import Update as UpdateOp
from tablesync.errors import ApiUnavailable

__all__ = [
    "MAX_ROUNDS",
    "Absorbed",
    "absorb",
    "announces_create",
    "first_unavailable",
    "kept_changing",
    "made_id",
    "new_record_id",
    "operation_of",
    "transient",
    "unavailable",
    "write_side",
    "write_target_of",
    "written_towards",
]

MAX_ROUNDS = 3
"""How many times one record is decided and written in one attempt before a
destination that keeps changing under it fails it (retried later)."""


def operation_of(d: Decision) -> WriteOp | None:
    """The write a decision makes on its side; None for a decision that writes nothing."""
    match d:
        case Create(matched=None, payload=payload, record_id=record_id):
            return CreateOp(payload, record_id, only_new=True)
        case Create(matched=row, payload=payload) if payload and row is not None:
            return UpdateOp(row.id, payload, row.etag)
        case Update(record_id=rid, payload=payload, etag=etag):
            return UpdateOp(rid, payload, etag)
        case Remove(record_id=rid):
            return DeleteOp(rid, None)
        case Restore(payload=payload, record_id=record_id):
            return CreateOp(payload, record_id)
    return None


def write_side(d: Decision) -> Side:
    """The side a writing decision writes to."""
    assert isinstance(d, Create | Update | Remove | Restore), d
    return d.side


def written_towards(d: Decision) -> Direction | None:
    """The direction of the write a decision makes: a change from BC whose
    counterpart vanished may delete or restore on either side, and it counts
    in the job of the side it wrote to."""
    if isinstance(d, Create | Update | Remove | Restore):
        return direction_of(other_side(d.side))
    return None


def announces_create(d: Decision) -> TypeGuard[Create]:
    """Whether the decision creates a record, announced as an intent first."""
    return isinstance(d, Create) and d.matched is None


def new_record_id(side: Side, announced: str | None, fresh: Callable[[], str]) -> str | None:
    """The id of a record to create on ``side``: Dataverse takes the caller's,
    announced in the intent first (and kept by a replay of the same create:
    ``announced``); BC picks its own (None)."""
    if side != "dataverse":
        return None
    return announced or fresh()


def write_target_of(d: Decision) -> WriteTarget | None:
    """The existing record a decision updates or deletes, announced before the
    write: a coupling to an existing record that writes to it updates it too."""
    match d:
        case Update(side=side, record_id=rid):
            return (side, rid, "update")
        case Remove(side=side, record_id=rid):
            return (side, rid, "delete")
        case Create(side=side, matched=Row(id=rid), payload=payload) if payload:
            return (side, rid, "update")
    return None


def made_id(d: Decision, result: WriteResult, *, announced: bool) -> str | None:
    """The id of the record an announced create made, once the side answered
    that it made it: the one the side picked (BC numbers its own records) or
    the one the create named (Dataverse takes it). Kept on the intent at once,
    so a later attempt finds the record by its id rather than by its values,
    and knows that a record missing by then was deleted since, not never made."""
    if not (announced and isinstance(d, Create) and isinstance(result, Written)):
        return None
    if result.row is not None:
        return result.row.id
    return d.record_id


def unavailable(result: WriteResult) -> bool:
    """Whether the answer says the side, not the record, is the trouble."""
    return isinstance(result, Rejected) and (result.status in (0, 408, 429) or result.status >= 500)


def transient(status: int) -> bool:
    """Whether a record the side refused with ``status`` may be taken on a later try
    (a timeout, a conflicting write, a locked record)."""
    return status in (408, 409, 423)


def first_unavailable(results: Iterable[tuple[Side, WriteResult]]) -> ApiUnavailable | None:
    """The error that sends the whole batch back, for the first answer that
    says its side is unavailable. Writes are idempotent (ETags, deterministic
    ids, create intents), so repeating the ones that did happen is safe."""
    for side, result in results:
        if isinstance(result, Rejected) and unavailable(result):
            return ApiUnavailable(
                f"writes still refused after retries: HTTP {result.status} {result.message}",
                side=side,
                status=result.status,
            )
    return None


@dataclass(frozen=True, slots=True)
class Absorbed:
    """What a write's answer made of its decision."""

    decision: Decision
    written: Row | None = None
    """The record as the side stored it (None after a delete, or when not written)."""
    refused: bool = False
    """The side answered with an error: nothing was written."""
    again: bool = False
    """The decision must be made again on the record as it is now."""


def absorb(d: Decision, result: WriteResult, *, coupled: bool, written_before: bool) -> Absorbed:
    """Sorts the answer to the write of ``d``. ``coupled``: the decision was
    made on the coupled counterpart as it was read (so it can be read and
    decided again); ``written_before``: an attempt that did not commit
    announced the same write."""
    match result:
        case Written(row=row):
            return Absorbed(d, written=row)
        case Stale():
            if isinstance(d, Update) and coupled:
                return Absorbed(d, again=True)
            return Absorbed(Fail("the record changed while it was being written; retrying", True))
        case Missing():
            if isinstance(d, Update) and coupled:
                # The counterpart vanished: a deletion, decided on the next round.
                return Absorbed(d, again=True)
            if isinstance(d, Remove):
                if written_before:
                    # An attempt that crashed before its commit deleted it.
                    return Absorbed(d)
                return Absorbed(
                    Uncouple(d.coupling, "already deleted on the other side", ("bc", "dataverse"))
                )
            return Absorbed(Fail(result.message or "the record does not exist", True))
        case Rejected(status=status, message=message):
            return Absorbed(Fail(f"{message} (HTTP {status})", transient(status)), refused=True)
    return Absorbed(d)


def kept_changing() -> Fail:
    """The decision on a record whose destination changed under every round of writes."""
    return Fail("the record kept changing while it was being written", True)
