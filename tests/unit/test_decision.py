"""One record's decision from everything known about it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.decision import (
    Facts,
    decide,
    event_of,
    lookups_needed,
    write_back,
    write_back_lookups,
    writes_back,
)
from tablesync.core.effects import WriteTarget
from tablesync.core.events import FieldValue, RecordChanged, Side
from tablesync.core.fieldmap import LookupKey, map_values, written_image
from tablesync.core.plan import (
    Create,
    Fail,
    FetchCandidates,
    FetchDestination,
    Ignore,
    MarkDeleted,
    Pending,
    Remove,
    Triage,
    Unchanged,
    Update,
    row_of,
    stamp_of,
)
from tablesync.core.records import Row
from tablesync.core.recovery import Announced
from tests.strategies import apply_couplings, apply_events, apply_rows

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
BC_ID = "11111111-1111-1111-1111-111111111111"
DV_ID = "22222222-2222-2222-2222-222222222222"
EUR_ID = "33333333-3333-3333-3333-333333333333"
USER_ID = "44444444-4444-4444-4444-444444444444"
RESOLVED = {
    LookupKey("CURRENCY", "bc", "EUR"): EUR_ID,
    LookupKey("SALESPEOPLE", "bc", "SP00001"): USER_ID,
    LookupKey("CURRENCY", "dataverse", EUR_ID): "EUR",
}
PAIR = Coupling("CUSTOMER", BC_ID, DV_ID, "10000", Stamp(T0, 'W/"bc1"'), Stamp(T0, 'W/"100"'))
TO_DV = FetchDestination("dataverse", DV_ID, PAIR)


def customer(**fields: FieldValue) -> dict[str, FieldValue]:
    base: dict[str, FieldValue] = {
        "number": "10000",
        "displayName": "Adatum",
        "city": "Atlanta",
        "creditLimit": 0,
        "currencyCode": "EUR",
        "salespersonCode": "SP00001",
        "blocked": " ",
    }
    return base | fields


def account(**fields: FieldValue) -> dict[str, FieldValue]:
    base: dict[str, FieldValue] = {
        "accountnumber": "10000",
        "name": "Adatum",
        "address1_city": "Atlanta",
        "creditlimit": 0,
        "_transactioncurrencyid_value": EUR_ID,
        "_ownerid_value": USER_ID,
        "customertypecode": 3,
        "statecode": 0,
    }
    return base | fields


def bc_event(op: str = "upsert", **fields: FieldValue) -> RecordChanged:
    return RecordChanged(
        side="bc",
        table="customers",
        record_id=BC_ID,
        op=op,  # type: ignore[arg-type]
        modified_at=T1,
        captured_at=T1,
        fields=customer(**fields) if op == "upsert" else {},
        etag='W/"bc2"',
    )


def dv_row(version: int = 100, **fields: FieldValue) -> Row:
    return Row(DV_ID, T0 if version == 100 else T1, f'W/"{version}"', account(**fields))


def test_an_interrupted_create_out_of_scope_now_is_coupled_as_made() -> None:
    event = bc_event(blocked="All")
    made = dv_row()
    f = Facts(event, Ignore("outside the mapping's filter"), created_before=made)
    decided = decide(CUSTOMER, MAPPINGS, f, RESOLVED)
    assert decided.decision == Create(
        "dataverse", {}, DV_ID, BC_ID, stamp_of(event), matched=made, recovered=True
    )
    assert decided.mapped is None


@given(
    apply_events(),
    st.one_of(
        st.just(Ignore("x")),
        st.builds(Unchanged, st.one_of(st.none(), apply_couplings())),
        st.just(Pending("p")),
    ),
)
def test_a_decision_made_at_triage_stands(event: RecordChanged, t: Triage) -> None:
    decided = decide(CUSTOMER, MAPPINGS, Facts(event, t), RESOLVED)
    assert decided.decision == t and decided.mapped is None


def test_a_counterpart_deleted_by_an_attempt_that_died_completes_the_removal() -> None:
    ours = Announced(deleted_by_us=True)
    f = Facts(bc_event(), TO_DV, PAIR, announced=ours)
    assert decide(CUSTOMER, MAPPINGS, f, RESOLVED).decision == Remove("dataverse", DV_ID, PAIR)


def test_a_vanished_counterpart_is_a_deletion_under_the_policy() -> None:
    decided = decide(CUSTOMER, MAPPINGS, Facts(bc_event(), TO_DV, PAIR), RESOLVED)
    assert isinstance(decided.decision, MarkDeleted) and decided.decision.coupling.dv_deleted
    assert decided.mapped is not None


def test_both_gone_one_by_tablesyncs_hand_is_a_removal_on_that_side() -> None:
    target: WriteTarget = ("dataverse", DV_ID, "delete")
    deleting = Facts(bc_event("delete"), TO_DV, PAIR, announced=Announced(target=target))
    assert decide(CUSTOMER, MAPPINGS, deleting, RESOLVED).decision == Remove(
        "dataverse", DV_ID, PAIR
    )
    # A replayed version of a record deleted since decides the same way.
    tombstoned = Facts(bc_event(), TO_DV, PAIR, tombstoned=True, announced=Announced(target))
    assert decide(CUSTOMER, MAPPINGS, tombstoned, RESOLVED).decision == Remove(
        "dataverse", DV_ID, PAIR
    )


def test_a_change_writes_to_the_counterpart() -> None:
    f = Facts(bc_event(city="Boston"), TO_DV, PAIR, destination=dv_row())
    decided = decide(CUSTOMER, MAPPINGS, f, RESOLVED)
    assert isinstance(decided.decision, Update)
    assert decided.decision.payload == {"address1_city": "Boston"}


def test_what_tablesync_wrote_to_the_record_is_no_change_of_the_users() -> None:
    # An attempt that died wrote "Boston" here (from the other side); the
    # version read back carries it, and the counterpart moved on since.
    mapped = map_values(
        CUSTOMER,
        "from_integration",
        account(address1_city="Boston"),
        RESOLVED,
        MAPPINGS,
        creating=False,
    )
    image = written_image(CUSTOMER, "bc", mapped, customer())
    f = Facts(
        bc_event(city="Boston"),
        TO_DV,
        PAIR,
        destination=dv_row(address1_city="Denver"),
        written_here=(image,),
    )
    assert isinstance(decide(CUSTOMER, MAPPINGS, f, RESOLVED).decision, Unchanged)
    # Without the image it is a user's change, in conflict with the counterpart's.
    plain = Facts(
        bc_event(city="Boston"), TO_DV, PAIR, destination=dv_row(101, address1_city="Denver")
    )
    assert not isinstance(decide(CUSTOMER, MAPPINGS, plain, RESOLVED).decision, Unchanged)


def test_an_announced_write_seen_on_the_counterpart_leaves_both_at_rest() -> None:
    # The counterpart changed since the last sync, to exactly what this
    # version maps to: tablesync's own write, whose commit a crash lost.
    changed = dv_row(101)
    mine = Announced(("dataverse", DV_ID, "update"), before=True)
    f = Facts(
        bc_event(), TO_DV, PAIR, destination=changed, destination_changed=True, announced=mine
    )
    decision = decide(CUSTOMER, MAPPINGS, f, RESOLVED).decision
    assert isinstance(decision, Unchanged) and decision.coupling is not None
    assert decision.coupling.dv_stamp == Stamp(changed.modified_at, changed.etag)


def test_an_uncoupled_record_held_by_a_create_in_flight_waits() -> None:
    f = Facts(bc_event(), FetchCandidates("dataverse", None), blocked=True)
    assert isinstance(decide(CUSTOMER, MAPPINGS, f, RESOLVED).decision, Pending)
    free = Facts(bc_event(), FetchCandidates("dataverse", None))
    created = decide(CUSTOMER, MAPPINGS, free, RESOLVED).decision
    assert isinstance(created, Create) and created.matched is None


def test_the_lookups_to_resolve_are_those_of_the_values_mapped() -> None:
    uncoupled = Facts(bc_event(), FetchCandidates("dataverse", None))
    assert lookups_needed(CUSTOMER, uncoupled) == {
        LookupKey("CURRENCY", "bc", "EUR"),
        LookupKey("SALESPEOPLE", "bc", "SP00001"),
    }
    # A deletion maps the survivor, towards the deleted side.
    survivor = Facts(bc_event("delete"), TO_DV, PAIR, destination=dv_row())
    back = lookups_needed(CUSTOMER, survivor)
    assert LookupKey("CURRENCY", "dataverse", EUR_ID) in back
    assert all(k.side == "dataverse" for k in back)
    assert lookups_needed(CUSTOMER, Facts(bc_event("delete"), TO_DV, PAIR)) == set()
    # A changed counterpart is mapped back too, to tell whether both are at rest.
    changed = Facts(bc_event(), TO_DV, PAIR, destination=dv_row(101), destination_changed=True)
    assert lookups_needed(CUSTOMER, changed) >= lookups_needed(CUSTOMER, uncoupled) | back


def test_a_create_sends_back_only_what_the_source_left_blank() -> None:
    event = bc_event(number="", city="")
    create = Create("dataverse", {}, None, BC_ID, stamp_of(event))
    made = dv_row(accountnumber="C00010", address1_city="Atlanta", name="ADATUM")
    assert writes_back(CUSTOMER, create, made)
    assert not writes_back(CUSTOMER, create, None)
    keys = write_back_lookups(CUSTOMER, create, made)
    resolved = {k: v for k, v in RESOLVED.items() if k in keys}
    payload = write_back(CUSTOMER, MAPPINGS, event, create, made, resolved)
    assert payload == {"number": "C00010", "city": "Atlanta"}
    # With a lookup of the new record unresolved, nothing is sent back
    # (unless the mapping clears what it cannot resolve, as CUSTOMER does).
    strict = replace(
        CUSTOMER,
        fields=tuple(
            replace(f, lookup=replace(f.lookup, clear_on_failure=())) if f.lookup else f
            for f in CUSTOMER.fields
        ),
    )
    assert write_back(strict, MAPPINGS, event, create, made, {}) == {}
    assert write_back(CUSTOMER, MAPPINGS, event, create, made, {}) == payload


def test_nothing_is_sent_back_to_a_one_way_mapping_or_after_a_match() -> None:
    currency = MAPPINGS.get("CURRENCY")
    create = Create("dataverse", {}, None, "c1", Stamp(T0, None))
    assert not writes_back(currency, create, dv_row())
    matched = Create("dataverse", {}, DV_ID, BC_ID, Stamp(T0, None), matched=dv_row())
    assert not writes_back(CUSTOMER, matched, dv_row())


@given(apply_rows(), st.sampled_from(["bc", "dataverse"]))
def test_a_record_read_now_decides_as_the_change_it_is(row: Row, side: Side) -> None:
    event = event_of(row, side, CUSTOMER.table(side))
    assert row_of(event) == row
    assert (event.op, event.table, event.etag) == ("upsert", CUSTOMER.table(side), row.etag)


@given(apply_events(), st.sampled_from(["candidates", "destination"]))
def test_a_record_whose_read_was_refused_fails_with_the_reason(
    event: RecordChanged, what: str
) -> None:
    triage: Triage = FetchCandidates("dataverse", None) if what == "candidates" else TO_DV
    reason = "dataverse refused to read accounts: GET accounts: 400 Could not read the value"
    facts = Facts(event, triage, PAIR if what == "destination" else None, refused=reason)

    decided = decide(CUSTOMER, MAPPINGS, facts, RESOLVED)

    assert decided.decision == Fail(reason)
    assert decided.mapped is None
