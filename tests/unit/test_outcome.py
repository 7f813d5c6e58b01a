"""What a decision writes, and what the side's answer to that write means."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Side
from tablesync.core.outcome import (
    Absorbed,
    absorb,
    announces_create,
    first_unavailable,
    kept_changing,
    made_id,
    new_record_id,
    operation_of,
    transient,
    unavailable,
    write_side,
    write_target_of,
    written_towards,
)
from tablesync.core.plan import (
    Create,
    Decision,
    Fail,
    Ignore,
    MarkDeleted,
    Pending,
    Remove,
    Restore,
    Skip,
    Unchanged,
    Uncouple,
    Update,
)
from tablesync.core.records import Create as CreateOp
from tablesync.core.records import Delete as DeleteOp
from tablesync.core.records import Missing, Rejected, Row, Stale, WriteResult, Written
from tablesync.core.records import Update as UpdateOp
from tests.strategies import apply_decisions, write_results

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
STAMP = Stamp(T0, 'W/"1"')
PAIR = Coupling("CUSTOMER", "bc1", "dv1", "C1", STAMP, STAMP)
ROW = Row("dv1", T0, 'W/"2"', {"name": "Adatum"})
UPDATE = Update("dataverse", "dv1", {"name": "Adatum"}, 'W/"1"', PAIR)
REMOVE = Remove("dataverse", "dv1", PAIR)
CREATE = Create("dataverse", {"name": "Adatum"}, None, "bc1", STAMP)


def test_each_writing_decision_makes_one_operation() -> None:
    matched = Create("dataverse", {"name": "A"}, "dv1", "bc1", STAMP, matched=ROW)
    # A create never writes over a record its id names; a restore of one may.
    assert operation_of(CREATE) == CreateOp({"name": "Adatum"}, None, only_new=True)
    assert operation_of(matched) == UpdateOp("dv1", {"name": "A"}, 'W/"2"')
    assert operation_of(UPDATE) == UpdateOp("dv1", {"name": "Adatum"}, 'W/"1"')
    assert operation_of(REMOVE) == DeleteOp("dv1", None)
    restore = Restore("bc", {"displayName": "A"}, None, PAIR)
    assert operation_of(restore) == CreateOp({"displayName": "A"}, None)
    # Coupled to a match that already holds every value: nothing to write.
    assert operation_of(Create("dataverse", {}, "dv1", "bc1", STAMP, matched=ROW)) is None


@given(apply_decisions())
def test_a_decision_writes_where_it_counts(d: Decision) -> None:
    op = operation_of(d)
    if op is not None:
        side = write_side(d)
        assert written_towards(d) == (
            "to_integration" if side == "dataverse" else "from_integration"
        )
    if isinstance(d, Ignore | Unchanged | Pending | Fail | Skip | Uncouple | MarkDeleted):
        assert op is None and written_towards(d) is None and write_target_of(d) is None
    assert announces_create(d) == (isinstance(d, Create) and d.matched is None)
    target = write_target_of(d)
    if isinstance(d, Create) and d.matched is not None and d.payload:
        # Coupled to an existing record and written to: an update of it.
        assert target == (d.side, d.matched.id, "update")
    elif target is not None:
        assert isinstance(d, Update | Remove)
        assert target == (d.side, d.record_id, "update" if isinstance(d, Update) else "delete")


@given(write_results())
def test_unavailable_is_the_sides_trouble_not_the_records(result: WriteResult) -> None:
    side_trouble = isinstance(result, Rejected) and (
        result.status in (0, 408, 429) or result.status >= 500
    )
    assert unavailable(result) == side_trouble


@given(st.lists(st.tuples(st.sampled_from(["bc", "dataverse"]), write_results())))
def test_the_first_unavailable_answer_sends_the_batch_back(
    answers: list[tuple[Side, WriteResult]],
) -> None:
    error = first_unavailable(answers)
    troubled = [(side, r) for side, r in answers if unavailable(r)]
    if not troubled:
        assert error is None
        return
    side, first = troubled[0]
    assert error is not None and isinstance(first, Rejected)
    assert (error.side, error.status) == (side, first.status)


def test_a_refusal_is_transient_for_timeouts_conflicts_and_locks() -> None:
    assert [s for s in (400, 403, 404, 408, 409, 412, 423, 429) if transient(s)] == [408, 409, 423]


@given(apply_decisions(), write_results(), st.booleans(), st.booleans())
def test_every_answer_is_absorbed_once(
    d: Decision, result: WriteResult, coupled: bool, written_before: bool
) -> None:
    a = absorb(d, result, coupled=coupled, written_before=written_before)
    if isinstance(result, Written):
        assert a == Absorbed(d, written=result.row)
        return
    assert a.written is None
    # Only an update of a coupled record read as it was is decided again.
    assert a.again == (isinstance(d, Update) and coupled and isinstance(result, Stale | Missing))
    if a.again:
        assert a.decision == d
    assert a.refused == isinstance(result, Rejected)
    if isinstance(result, Rejected):
        assert isinstance(a.decision, Fail)
        assert a.decision.retryable == transient(result.status)


@pytest.mark.parametrize(
    ("result", "decision"),
    [
        (Stale(), Fail("the record changed while it was being written; retrying", True)),
        (Missing("Not found"), Fail("Not found", True)),
        (Missing(), Fail("the record does not exist", True)),
        (Rejected(400, "bad value"), Fail("bad value (HTTP 400)", False)),
        (Rejected(409, "locked"), Fail("locked (HTTP 409)", True)),
    ],
)
def test_an_answer_that_fails_a_create(result: WriteResult, decision: Fail) -> None:
    assert absorb(CREATE, result, coupled=False, written_before=False).decision == decision


def test_a_counterpart_gone_before_its_removal() -> None:
    # Gone already: the pair is uncoupled, both records counted gone.
    plain = absorb(REMOVE, Missing(), coupled=True, written_before=False)
    assert plain.decision == Uncouple(
        PAIR, "already deleted on the other side", ("bc", "dataverse")
    )
    # Deleted by an attempt that did not commit: the removal stands, counted here.
    ours = absorb(REMOVE, Missing(), coupled=True, written_before=True)
    assert ours.decision == REMOVE and not ours.again


def test_an_update_whose_record_moved_is_decided_again() -> None:
    assert absorb(UPDATE, Stale(), coupled=True, written_before=False).again
    assert absorb(UPDATE, Missing(), coupled=True, written_before=False).again
    # Not read as coupled (a paired record, say): nothing to read again.
    assert not absorb(UPDATE, Stale(), coupled=False, written_before=False).again
    assert kept_changing().retryable


def test_what_an_announced_create_made_is_known_once_the_side_answered() -> None:
    made = Written(Row("bc-new", T0, None))
    assert made_id(CREATE, made, announced=True) == "bc-new"
    assert made_id(CREATE, made, announced=False) is None
    assert made_id(CREATE, Written(None), announced=True) is None
    assert made_id(CREATE, Rejected(400, "no"), announced=True) is None
    named = Create("dataverse", {}, "dv-chosen", "bc1", STAMP)
    assert made_id(named, Written(Row("dv-chosen", T0, None)), announced=True) == "dv-chosen"
    assert made_id(named, Written(None), announced=True) == "dv-chosen"
    assert made_id(named, Rejected(412, "exists"), announced=True) is None
    assert made_id(UPDATE, made, announced=True) is None


def test_dataverse_takes_the_announced_id_and_bc_picks_its_own() -> None:
    assert new_record_id("dataverse", "dv-announced", lambda: "fresh") == "dv-announced"
    assert new_record_id("dataverse", None, lambda: "fresh") == "fresh"
    assert new_record_id("bc", "ignored", lambda: "fresh") is None
