"""What an attempt that did not commit left behind, and what it means now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core import filters
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import Intent, WriteTarget
from tablesync.core.events import FieldValue, RecordChanged, Side
from tablesync.core.fieldmap import Mapped, looks_sent, map_values
from tablesync.core.plan import Create, FetchDestination, Remove, Unchanged, Update, stamp_of
from tablesync.core.records import Row
from tablesync.core.recovery import (
    INTENT_SLACK,
    Announced,
    Check,
    announced_before,
    announced_pair,
    announcing,
    destination_checks,
    found_announced,
    gone_check,
    image_of,
    made_records,
    made_then_gone,
    recent_query,
    sent_by,
)
from tests.strategies import apply_couplings, apply_intents, apply_rows

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
PAIR = Coupling("CUSTOMER", "bc1", "dv1", "C1", Stamp(T0, 'W/"b1"'), Stamp(T0, 'W/"1"'))
TO_DV = FetchDestination("dataverse", "dv1", PAIR)


def _event(op: str = "upsert", **fields: FieldValue) -> RecordChanged:
    return RecordChanged(
        side="bc",
        table="customers",
        record_id="bc1",
        op=op,  # type: ignore[arg-type]
        modified_at=T1,
        captured_at=T1,
        fields=fields,
        etag='W/"b2"',
    )


def _intent(dest_id: str | None = None, **sent: FieldValue) -> Intent:
    return Intent("CUSTOMER", "bc", "bc1", dest_id, T0, sent)


# Creates


def test_the_records_made_since_an_intent_are_asked_by_the_sides_modified_field() -> None:
    early = _intent()
    late = Intent("CUSTOMER", "bc", "bc2", None, T1, {})
    assert recent_query(CUSTOMER, "bc", [late, early]) == filters.Compare(
        "lastModifiedDateTime", filters.Op.GE, T0 - INTENT_SLACK
    )
    assert recent_query(CUSTOMER, "dataverse", [late]) == filters.Compare(
        "modifiedon", filters.Op.GE, T1 - INTENT_SLACK
    )


def test_an_old_intent_sends_what_a_create_of_this_version_sends() -> None:
    event = _event(number="C1", displayName="Adatum")
    assert sent_by(_intent(name="kept"), event, CUSTOMER, MAPPINGS) == {"name": "kept"}
    sent = sent_by(_intent(), event, CUSTOMER, MAPPINGS)
    assert sent["accountnumber"] == "C1" and sent["name"] == "Adatum"
    # A deletion has no values to compare.
    assert sent_by(_intent(), _event("delete"), CUSTOMER, MAPPINGS) == {}


@given(
    st.lists(st.dictionaries(st.sampled_from(["name", "city"]), st.sampled_from(["A", "B"]))),
    st.lists(apply_rows(), max_size=6),
    st.sets(st.uuids().map(str), max_size=2),
)
def test_a_record_is_given_to_one_create_at_most(
    sents: list[dict[str, FieldValue]], recent: list[Row], taken: set[str]
) -> None:
    taken |= {r.id for r in recent[:1]}
    made = made_records(sents, recent, taken)
    assert len(made) == len(sents)
    found = [r for r in made if r is not None]
    assert len({id(r) for r in found}) == len(found)
    for sent, row in zip(sents, made, strict=True):
        if row is not None:
            assert row in recent and row.id not in taken
            assert looks_sent(sent, row.fields)


def test_two_look_alikes_are_neither_taken() -> None:
    ours = Row("bc9", T1, None, {"displayName": "Interrupted"})
    twin = Row("bc8", T1, None, {"displayName": "Interrupted"})
    sent: dict[str, FieldValue] = {"displayName": "Interrupted"}
    assert made_records([sent], [ours, twin], set()) == [None]
    assert made_records([sent], [ours, twin], {"bc8"}) == [ours]


def test_a_named_record_that_is_gone_may_be_one_tablesync_deleted() -> None:
    named = _intent("dv9")
    assert gone_check(named, None, "dataverse") == ("dataverse", "dv9", "delete")
    assert gone_check(named, Row("dv9", T0, None), "dataverse") is None
    assert gone_check(_intent(), None, "dataverse") is None


def test_the_pair_an_announced_create_of_a_deleted_record_made() -> None:
    event = _event("delete")
    made = Row("dv9", T0, 'W/"5"', {"accountnumber": "C1"})
    pair = announced_pair(CUSTOMER, event, _intent("dv9"), made, gone=False)
    assert pair is not None and (pair.bc_id, pair.dv_id) == ("bc1", "dv9")
    assert pair.dv_stamp == Stamp(T0, 'W/"5"') and pair.bc_stamp == stamp_of(event)
    # Gone, but deleted by tablesync: the pair as the intent named it.
    gone = announced_pair(CUSTOMER, event, _intent("dv9"), None, gone=True)
    assert gone is not None and gone.dv_id == "dv9" and gone.dv_stamp == Stamp(T0, None)
    assert announced_pair(CUSTOMER, event, _intent("dv9"), None, gone=False) is None
    assert announced_pair(CUSTOMER, event, _intent(), None, gone=True) is None


def test_a_record_the_side_said_it_made_and_is_missing_now_was_deleted_since() -> None:
    made = Intent("CUSTOMER", "bc", "bc1", "dv9", T0, {}, made=True)
    assert made_then_gone(made, None)
    # Found: not gone. Named but never answered: perhaps never made.
    assert not made_then_gone(made, Row("dv9", T0, None))
    assert not made_then_gone(_intent("dv9"), None)
    assert not made_then_gone(None, None)
    # Never answered, but its deletion was seen: it was made.
    assert made_then_gone(_intent("dv9"), None, seen_deleted=True)
    assert not made_then_gone(_intent("dv9"), Row("dv9", T0, None), seen_deleted=True)
    # The pair it made, whose counterpart is the deleted record.
    pair = announced_pair(CUSTOMER, _event(name="A"), made, None, gone=True)
    assert pair is not None and (pair.bc_id, pair.dv_id) == ("bc1", "dv9")


def test_a_pair_made_on_bc_keeps_the_new_records_number() -> None:
    event = RecordChanged("dataverse", "accounts", "dv1", "delete", T1, T1)
    made = Row("bc9", T0, 'W/"b"', {"number": "C00010"})
    intent = Intent("CUSTOMER", "dataverse", "dv1", None, T0, {})
    pair = announced_pair(CUSTOMER, event, intent, made, gone=False)
    assert pair is not None and (pair.bc_id, pair.dv_id, pair.bc_key) == ("bc9", "dv1", "C00010")


# Updates and deletions


def test_a_changed_counterpart_may_be_an_announced_update() -> None:
    newer = Row("dv1", T1, 'W/"2"', {})
    changed, checks = destination_checks(_event(), TO_DV, newer, deleting=False)
    assert changed and checks == ((("dataverse", "dv1", "update"), True),)
    same = Row("dv1", T0, 'W/"1"', {})
    assert destination_checks(_event(), TO_DV, same, deleting=False) == (
        False,
        ((("dataverse", "dv1", "update"), False),),
    )


def test_a_vanished_counterpart_may_be_an_announced_deletion() -> None:
    changed, checks = destination_checks(_event(), TO_DV, None, deleting=False)
    assert not changed
    assert checks == (
        (("dataverse", "dv1", "update"), False),
        (("dataverse", "dv1", "delete"), False),
    )


def test_both_gone_either_may_be_tablesyncs_deletion() -> None:
    changed, checks = destination_checks(_event("delete"), TO_DV, None, deleting=True)
    assert not changed
    assert checks == (
        (("dataverse", "dv1", "delete"), True),
        (("bc", "bc1", "delete"), True),
        (("dataverse", "dv1", "update"), False),
        (("bc", "bc1", "update"), False),
    )
    survivor = Row("dv1", T1, 'W/"2"', {})
    assert destination_checks(_event("delete"), TO_DV, survivor, deleting=True)[1] == (
        (("dataverse", "dv1", "update"), False),
        (("bc", "bc1", "update"), False),
    )


_targets: st.SearchStrategy[WriteTarget] = st.tuples(
    st.sampled_from(["bc", "dataverse"]),
    st.sampled_from(["bc1", "dv1"]),
    st.sampled_from(["update", "delete"]),
)


@given(
    st.lists(st.tuples(_targets, st.booleans()), max_size=5),
    st.sets(_targets),
    st.booleans(),
    st.builds(
        Announced,
        st.one_of(st.none(), _targets),
        st.frozensets(_targets),
        st.booleans(),
        st.booleans(),
    ),
    st.sets(_targets),
)
def test_what_an_attempt_announced_is_settled_here(
    checks: list[Check],
    ours: set[WriteTarget],
    deleting: bool,
    known: Announced,
    own: set[WriteTarget],
) -> None:
    """``own``: writes the batch announced itself, earlier in it. Seed
    instances 600329: the echo of such a write, taken for a lost commit's,
    put the destination at rest while it still held a user's changes that
    the write had left alone, and they never reached the other side."""
    found = found_announced(known, checks, ours, deleting=deleting, own=own)
    ours_checked = [(t, changed) for t, changed in checks if t in ours]
    # Every announced write checked is settled with this decision; nothing else is added.
    assert found.all == known.all | {t for t, _ in ours_checked}
    # What is known stays known.
    assert found.deleted_by_us >= known.deleted_by_us and found.before >= known.before
    assert found.deleted_by_us == known.deleted_by_us or any(
        t[2] == "delete" and not deleting for t, _ in ours_checked
    )
    changed = [t for t, c in ours_checked if c and t not in own]
    if known.before:
        assert found.target == known.target
    elif changed:
        # The first write seen on its record is the attempt's.
        assert found.before and found.target == changed[0]
    else:
        assert found == Announced(known.target, found.all, False, found.deleted_by_us)


def test_this_attempts_write_is_the_target_and_earlier_ones_are_known() -> None:
    update = Update("dataverse", "dv1", {"name": "A"}, 'W/"1"', PAIR)
    fresh = announcing(Announced(), update)
    assert fresh.target == ("dataverse", "dv1", "update") and fresh.target in fresh.all
    removal = announcing(fresh, Remove("dataverse", "dv1", PAIR))
    assert removal.target == ("dataverse", "dv1", "delete") and len(removal.all) == 2
    # A decision that writes no existing record keeps what was found.
    assert announcing(fresh, Unchanged()) == fresh
    assert announcing(Announced(), Unchanged()) == Announced()
    assert announced_before(fresh, {("dataverse", "dv1", "update")}).before
    assert not announced_before(fresh, set()).before
    assert not announced_before(Announced(before=True), set()).before


def test_an_update_is_announced_with_the_image_it_leaves() -> None:
    update = Update("dataverse", "dv1", {"name": "Adatum"}, 'W/"1"', PAIR)
    full = map_values(
        CUSTOMER, "to_integration", {"displayName": "Adatum"}, {}, MAPPINGS, creating=False
    )
    # An update that writes the name only: the record keeps its other values.
    mapped = Mapped(tuple((f, v) for f, v in full.values if f.dataverse == "name"))
    current = Row("dv1", T0, 'W/"1"', {"name": "Old", "address1_city": "Paris"})
    image = image_of(CUSTOMER, update, mapped, current)
    assert image is not None
    assert (image["name"], image["address1_city"], image["telephone1"]) == ("Adatum", "Paris", None)
    assert image_of(CUSTOMER, update, None, current) is None
    # A coupling to a record made or matched before, written to: the same.
    create = Create(
        "dataverse", {"name": "Adatum"}, "dv1", "bc1", stamp_of(_event()), matched=current
    )
    made = image_of(CUSTOMER, create, mapped, None)
    assert made is not None and (made["name"], made["address1_city"]) == ("Adatum", "Paris")
    nothing = Create("dataverse", {}, "dv1", "bc1", stamp_of(_event()), matched=current)
    assert image_of(CUSTOMER, nothing, mapped, None) is None
    assert image_of(CUSTOMER, Remove("dataverse", "dv1", PAIR), mapped, current) is None


@given(apply_couplings(), st.one_of(st.none(), apply_rows()), st.booleans())
def test_every_check_names_the_pair(
    coupling: Coupling, destination: Row | None, deleting: bool
) -> None:
    t = FetchDestination("dataverse", coupling.dv_id, coupling)
    event = RecordChanged(
        "bc", "customers", coupling.bc_id, "delete" if deleting else "upsert", T1, T1
    )
    changed, checks = destination_checks(event, t, destination, deleting=deleting)
    pair: set[tuple[Side, str]] = {("bc", coupling.bc_id), ("dataverse", coupling.dv_id)}
    assert {(side, rid) for (side, rid, _), _ in checks} <= pair
    assert not changed or (destination is not None and not deleting)
    assert len(checks) == len(set(checks))


@given(apply_intents())
def test_an_intent_recovers_from_its_own_time_less_the_slack(intent: Intent) -> None:
    query = recent_query(CUSTOMER, "bc", [intent])
    assert isinstance(query, filters.Compare)
    assert query.value == intent.created_at - timedelta(seconds=5)
