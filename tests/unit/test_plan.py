"""The sync rules, one decision at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.coupling_rules import couple_created
from tablesync.core.couplings import Coupling, Stamp, compare_stamps
from tablesync.core.events import FieldValue, RecordChanged, Side
from tablesync.core.fieldmap import LookupKey, Mapped, changes, map_values, sent_values
from tablesync.core.mappings import MappingSet, TableMapping
from tablesync.core.plan import (
    Create,
    Fail,
    FetchCandidates,
    FetchDestination,
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
    at_rest,
    counters_of,
    decide_coupled,
    decide_deletion,
    decide_uncoupled,
    triage,
)
from tablesync.core.records import Ref, Row

_, MAPPINGS = load_mapping_file(default_mapping_file())
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
CONTINUOUS = JobContext(None, "continuous")
FULL = JobContext("job", "full", ignore_only_coupled=True)
BC_ID = "11111111-1111-1111-1111-111111111111"
DV_ID = "22222222-2222-2222-2222-222222222222"
EUR_ID = "33333333-3333-3333-3333-333333333333"
USER_ID = "44444444-4444-4444-4444-444444444444"


def customer(**fields: FieldValue) -> dict[str, FieldValue]:
    base: dict[str, FieldValue] = {
        "number": "10000",
        "displayName": "Adatum",
        "addressLine1": "1 Main St",
        "addressLine2": "",
        "city": "Atlanta",
        "state": "GA",
        "postalCode": "31772",
        "country": "US",
        "phoneNumber": "",
        "email": "a@adatum.example",
        "website": "",
        "creditLimit": 0,
        "currencyCode": "EUR",
        "salespersonCode": "SP00001",
        "blocked": " ",
    }
    base.update(fields)
    return base


def account(**fields: FieldValue) -> dict[str, FieldValue]:
    base: dict[str, FieldValue] = {
        "accountnumber": "10000",
        "name": "Adatum",
        "address1_line1": "1 Main St",
        "address1_line2": None,
        "address1_city": "Atlanta",
        "address1_stateorprovince": "GA",
        "address1_postalcode": "31772",
        "address1_country": "US",
        "telephone1": None,
        "emailaddress1": "a@adatum.example",
        "websiteurl": None,
        "creditlimit": 0,
        "_transactioncurrencyid_value": EUR_ID,
        "_ownerid_value": USER_ID,
        "customertypecode": 3,
        "statecode": 0,
    }
    base.update(fields)
    return base


def event(
    side: Side,
    fields: dict[str, FieldValue],
    *,
    at: datetime = T0,
    etag: str | None = None,
    op: str = "upsert",
    job: str | None = None,
    record_id: str | None = None,
) -> RecordChanged:
    return RecordChanged(
        side=side,
        table="customers" if side == "bc" else "accounts",
        record_id=record_id or (BC_ID if side == "bc" else DV_ID),
        op=op,  # type: ignore[arg-type]
        modified_at=at,
        captured_at=at,
        fields=fields,
        etag=etag,
        snapshot_job_id=job,
    )


def coupling(bc_at: datetime = T0, dv_version: int = 100, bc_etag: str = 'W/"bc1"') -> Coupling:
    return Coupling(
        "CUSTOMER", BC_ID, DV_ID, "10000", Stamp(bc_at, bc_etag), Stamp(T0, f'W/"{dv_version}"')
    )


RESOLVED = {
    LookupKey("CURRENCY", "bc", "EUR"): EUR_ID,
    LookupKey("SALESPEOPLE", "bc", "SP00001"): USER_ID,
    LookupKey("CURRENCY", "dataverse", EUR_ID): "EUR",
}


def mapped(
    e: RecordChanged,
    *,
    creating: bool = False,
    resolved: dict[LookupKey, str] = RESOLVED,
    mapping: TableMapping | None = None,
) -> Mapped:
    m = mapping or MAPPINGS.get("CUSTOMER")
    direction = "to_integration" if e.side == "bc" else "from_integration"
    return map_values(m, direction, e.fields, resolved, MAPPINGS, creating=creating)


CUSTOMER = MAPPINGS.get("CUSTOMER")


# triage


def test_direction_filter_and_only_coupled_are_ignored_and_not_counted() -> None:
    currency = MAPPINGS.get("CURRENCY")
    dv_currency = replace(event("dataverse", {}), table="transactioncurrencies")
    assert isinstance(triage(dv_currency, currency, CONTINUOUS, None), Ignore)
    blocked = event("bc", customer(blocked="All"))
    assert isinstance(triage(blocked, CUSTOMER, FULL, None), Ignore)
    assert isinstance(triage(event("bc", customer()), CUSTOMER, CONTINUOUS, None), Ignore)
    assert counters_of(Ignore("x")) == ()


def test_full_sync_clears_only_coupled_for_its_events() -> None:
    t = triage(event("bc", customer(), job="job"), CUSTOMER, FULL, None)
    assert isinstance(t, FetchCandidates) and t.side == "dataverse"


def test_replayed_and_echoed_events_are_unchanged_without_a_fetch() -> None:
    c = coupling()
    replay = event("bc", customer(), at=T0, etag='W/"bc1"')
    assert isinstance(triage(replay, CUSTOMER, CONTINUOUS, c), Unchanged)
    echo = event("dataverse", account(), etag='W/"100"')
    assert isinstance(triage(echo, CUSTOMER, CONTINUOUS, c), Unchanged)


def test_an_older_event_never_overwrites_newer_state() -> None:
    c = coupling(bc_at=T0 + timedelta(seconds=5))
    older = event("bc", customer(displayName="Old"), at=T0, etag='W/"bc0"')
    assert isinstance(triage(older, CUSTOMER, CONTINUOUS, c), Unchanged)
    older_dv = event("dataverse", account(name="Old"), etag='W/"99"')
    assert isinstance(triage(older_dv, CUSTOMER, CONTINUOUS, c), Unchanged)


def test_a_newer_event_of_a_coupled_record_fetches_its_counterpart() -> None:
    c = coupling()
    newer = event("bc", customer(), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    t = triage(newer, CUSTOMER, CONTINUOUS, c)
    assert t == FetchDestination("dataverse", DV_ID, c)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_dataverse_versions_order_changes(seen: int, synced: int) -> None:
    result = compare_stamps("dataverse", Stamp(T0, f'W/"{seen}"'), Stamp(T0, f'W/"{synced}"'))
    assert result == ("newer" if seen > synced else "older" if seen < synced else "same")


# coupled records


def test_values_equal_to_the_counterpart_are_unchanged_and_refresh_the_source_stamp() -> None:
    c = coupling()
    e = event("bc", customer(), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    dest = Row(DV_ID, T0, 'W/"100"', account())
    d = decide_coupled(e, CUSTOMER, c, dest, mapped(e))
    assert isinstance(d, Unchanged) and d.coupling is not None
    assert d.coupling.bc_stamp == Stamp(e.modified_at, e.etag)
    assert d.coupling.dv_stamp == c.dv_stamp


BACK = {
    **RESOLVED,
    LookupKey("SALESPEOPLE", "dataverse", USER_ID): "SP00001",
}


def _as_dv_event(row: Row) -> RecordChanged:
    return event("dataverse", dict(row.fields), at=row.modified_at, etag=row.etag)


def test_a_write_whose_coupling_a_crash_lost_is_recorded_once_both_sides_agree() -> None:
    # Dataverse already holds BC's change (tablesync wrote it, then died before
    # recording the write): its version is recorded, so its echo is not taken
    # for a user's change that would win the next conflict.
    c = coupling()
    e = event("bc", customer(city="Boston"), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    written = Row(DV_ID, T0 + timedelta(seconds=1), 'W/"105"', account(address1_city="Boston"))
    d = decide_coupled(e, CUSTOMER, c, written, mapped(e))
    back = mapped(_as_dv_event(written), resolved=BACK)
    settled = at_rest(d, e, CUSTOMER, written, back)
    assert isinstance(settled, Unchanged) and settled.coupling is not None
    assert settled.coupling.dv_stamp == Stamp(written.modified_at, 'W/"105"')
    assert settled.coupling.bc_stamp == Stamp(e.modified_at, e.etag)


def test_a_destination_with_something_to_send_back_is_not_taken_as_at_rest() -> None:
    c = coupling()
    e = event("bc", customer(), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    changed = Row(DV_ID, T0 + timedelta(seconds=1), 'W/"105"', account())
    d = decide_coupled(e, CUSTOMER, c, changed, mapped(e))
    assert isinstance(d, Unchanged)
    # The way back cannot be mapped (lookups unknown), or cannot be mapped at all.
    for back in (mapped(_as_dv_event(changed), resolved={}), None):
        kept = at_rest(d, e, CUSTOMER, changed, back)
        assert isinstance(kept, Unchanged) and kept.coupling is not None
        assert kept.coupling.dv_stamp == c.dv_stamp
    # Announced by an attempt that crashed before its commit: tablesync's own write.
    ours = at_rest(d, e, CUSTOMER, changed, None, ours=True)
    assert isinstance(ours, Unchanged) and ours.coupling is not None
    assert ours.coupling.dv_stamp == Stamp(changed.modified_at, 'W/"105"')
    # A one-way mapping has no way back: the destination's version is recorded.
    one_way = replace(CUSTOMER, direction="to_integration")
    settled = at_rest(d, e, one_way, changed, None)
    assert isinstance(settled, Unchanged) and settled.coupling is not None
    assert settled.coupling.dv_stamp == Stamp(changed.modified_at, 'W/"105"')


def test_a_change_becomes_an_update_of_the_differing_fields_with_the_etag() -> None:
    c = coupling()
    e = event("bc", customer(city="Boston"), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    dest = Row(DV_ID, T0, 'W/"100"', account())
    d = decide_coupled(e, CUSTOMER, c, dest, mapped(e))
    assert isinstance(d, Update)
    assert d.payload == {"address1_city": "Boston"} and d.etag == 'W/"100"'
    assert counters_of(d) == ("modified",)


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("none", None), ("send_to_integration", "bc"), ("get_from_integration", "dataverse")],
)
def test_both_sides_changed_follows_the_conflict_policy(policy: str, winner: Side | None) -> None:
    mapping = replace(CUSTOMER, update_conflict=policy)  # type: ignore[arg-type]
    c = coupling()
    bc = event("bc", customer(city="Boston"), at=T0 + timedelta(seconds=1), etag='W/"bc2"')
    dv_row = Row(DV_ID, T0 + timedelta(seconds=1), 'W/"105"', account(address1_city="Paris"))
    d = decide_coupled(bc, mapping, c, dv_row, mapped(bc, mapping=mapping))
    if winner is None:
        assert isinstance(d, Skip) and d.error and "both" in d.message
    elif winner == "bc":
        assert isinstance(d, Update) and d.payload == {"address1_city": "Boston"}
    else:
        assert isinstance(d, Skip) and not d.error
    assert counters_of(d) == (("modified",) if winner == "bc" else ("skipped",))


def test_an_echo_that_races_its_coupling_is_unchanged_by_value() -> None:
    # The coupling still has the old stamps, but Dataverse already holds the
    # values BC sent: nothing to write, nothing echoed back.
    c = coupling()
    echo = event("dataverse", account(address1_city="Boston"), etag='W/"101"')
    bc_row = Row(BC_ID, T0 + timedelta(seconds=1), 'W/"bc2"', customer(city="Boston"))
    d = decide_coupled(echo, CUSTOMER, c, bc_row, mapped(echo))
    assert isinstance(d, Unchanged)


def test_unresolved_lookup_is_pending_and_never_written_half() -> None:
    c = coupling()
    e = event("bc", customer(salespersonCode="SP00009"), at=T0 + timedelta(seconds=1), etag="x")
    dest = Row(DV_ID, T0, 'W/"100"', account())
    d = decide_coupled(e, CUSTOMER, c, dest, mapped(e))
    assert isinstance(d, Pending) and "SP00009" in d.message
    assert counters_of(d) == ("pending",)


def test_blank_lookup_clears_and_unknown_currency_from_dataverse_is_local_currency() -> None:
    e = event(
        "dataverse", account(_transactioncurrencyid_value="99999999-9999-9999-9999-999999999999")
    )
    m = mapped(e)
    assert not m.unresolved
    values = {f.bc: v for f, v in m.values}
    assert values["currencyCode"] == ""


def test_lookups_map_to_binds_and_back_to_codes() -> None:
    e = event("bc", customer())
    payload = changes(mapped(e, creating=True), "dataverse", None)
    assert payload["transactioncurrencyid@odata.bind"] == Ref("transactioncurrencies", EUR_ID)
    assert payload["ownerid@odata.bind"] == Ref("systemusers", USER_ID)
    assert payload["customertypecode"] == 3
    back = changes(mapped(event("dataverse", account())), "bc", None)
    assert back["currencyCode"] == "EUR"
    assert "salespersonCode" not in back  # owner is sent to Dataverse only


def test_a_blank_salesperson_leaves_the_owner_as_it_is() -> None:
    """BC's Not Null on the owner: Dataverse has no account without one, so a
    customer with no salesperson sends none, on a create (the calling user
    owns it) as on an update (the owner it has stays)."""
    e = event("bc", customer(salespersonCode=""))
    for creating in (True, False):
        m = mapped(e, creating=creating)
        assert not m.unresolved
        assert "ownerid" not in {f.dataverse for f, _ in m.values}
        assert not any(k.startswith("ownerid") for k in changes(m, "dataverse", None))
    present = account(_ownerid_value=USER_ID)
    assert not any(k.startswith("ownerid") for k in changes(mapped(e), "dataverse", present))


# uncoupled records


def test_uncoupled_record_is_created_on_the_other_side() -> None:
    e = event("bc", customer(), job="job")
    d = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [])
    assert isinstance(d, Create) and d.side == "dataverse" and d.matched is None
    assert d.payload["customertypecode"] == 3
    assert counters_of(d) == ("inserted",)
    e2 = event("dataverse", account(), job="job")
    d2 = decide_uncoupled(e2, CUSTOMER, mapped(e2, creating=True), [])
    assert isinstance(d2, Create) and d2.side == "bc" and d2.record_id is None


def test_one_match_couples_two_matches_fail() -> None:
    e = event("bc", customer(city="Boston"), job="job")
    match = Row(DV_ID, T0, 'W/"7"', account())
    d = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [match])
    assert isinstance(d, Create) and d.matched == match and d.record_id == DV_ID
    assert d.payload == {"address1_city": "Boston"}
    assert counters_of(d) == ("modified", "coupled")
    other = replace(match, id="55555555-5555-5555-5555-555555555555")
    d2 = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [match, other])
    assert isinstance(d2, Fail) and "no unique uncoupled matching record" in d2.message


def test_a_match_for_an_announced_create_is_the_record_it_made() -> None:
    # The create was announced, the crash lost its result, and the record
    # changed since: the match finds it, and it counts as the insert it was.
    e = event("bc", customer(city="Boston"), job="job")
    match = Row(DV_ID, T0, 'W/"7"', account())
    d = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [match], announced=True)
    assert isinstance(d, Create) and d.matched == match and d.recovered
    assert counters_of(d) == ("inserted",)


def test_a_create_interrupted_by_a_crash_is_recovered_not_repeated() -> None:
    e = event("dataverse", account(), job="job")
    made = Row(BC_ID, T0, 'W/"bc1"', customer())
    d = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [], created_before=made)
    assert isinstance(d, Create) and d.record_id == BC_ID and d.recovered
    assert counters_of(d) == ("inserted",)


def test_a_users_edit_of_a_record_a_crashed_create_made_is_kept() -> None:
    # tablesync created the account and died before recording it; a user
    # renamed the account meanwhile. The replayed create couples it without
    # writing the old name back, and leaves the account's version unsynced so
    # the new name flows to BC (invariant 9).
    e = event("bc", customer(), job="job")
    sent = changes(mapped(e, creating=True), "dataverse", None)
    made = Row(DV_ID, T0, 'W/"9"', {**account(), "name": "Renamed by a user"})
    d = decide_uncoupled(
        e, CUSTOMER, mapped(e, creating=True), [], created_before=made, sent=sent_values(sent)
    )
    assert isinstance(d, Create) and d.recovered and d.edited == {"name"}
    assert "name" not in d.payload
    c = couple_created(CUSTOMER, e, d, None, None)
    assert c is not None and c.dv_stamp == Stamp(None, None)
    assert compare_stamps("dataverse", Stamp(T0, 'W/"9"'), c.dv_stamp) == "newer"


def test_a_record_being_created_by_the_other_direction_waits() -> None:
    e = event("dataverse", account(), job="job")
    d = decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), [], blocked_by_intent=True)
    assert isinstance(d, Pending)


# deletions


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("none", MarkDeleted),
        ("remove_coupling", Uncouple),
        ("delete", Remove),
        ("restore", Restore),
    ],
)
def test_deletion_policies(policy: str, expected: type) -> None:
    mapping = replace(CUSTOMER, deletion=policy)  # type: ignore[arg-type]
    c = coupling()
    survivor = Row(DV_ID, T0, 'W/"100"', account())
    as_event = event("dataverse", survivor.fields)
    d = decide_deletion(mapping, c, "bc", survivor, mapped(as_event, creating=True))
    assert isinstance(d, expected)
    if isinstance(d, Remove):
        assert d.side == "dataverse" and d.record_id == DV_ID
    if isinstance(d, Restore):
        assert d.side == "bc" and d.payload["number"] == "10000"


def test_deleted_on_both_sides_just_uncouples() -> None:
    assert isinstance(decide_deletion(CUSTOMER, coupling(), "bc", None, None), Uncouple)


def test_deleted_on_both_sides_by_a_crashed_attempt_counts_as_its_deletion() -> None:
    c = coupling()
    d = decide_deletion(CUSTOMER, c, "bc", None, None, deleted_here="dataverse")
    assert d == Remove("dataverse", c.dv_id, c)
    assert counters_of(d) == ("deleted", "uncoupled")


# mapping is idempotent: applying a payload leaves nothing to change

names = st.text(alphabet="abcdefghij ", max_size=12)


@given(
    st.fixed_dictionaries(
        {
            "displayName": names,
            "city": names,
            "phoneNumber": names,
            "email": names,
            "creditLimit": st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False),
        }
    ),
    st.fixed_dictionaries(
        {
            "name": names | st.none(),
            "address1_city": names | st.none(),
            "telephone1": names | st.none(),
        }
    ),
)
def test_applying_the_payload_leaves_no_difference(
    source: dict[str, Any], dest: dict[str, Any]
) -> None:
    e = event("bc", customer(**source))
    m = mapped(e)
    current: dict[str, FieldValue] = account(**dest)
    payload = changes(m, "dataverse", current)
    after = dict(current)
    for name, value in payload.items():
        if isinstance(value, Ref):
            nav = name.removesuffix("@odata.bind")
            after[f"_{nav}_value"] = value.id
        else:
            after[name] = value
    assert changes(m, "dataverse", after) == {}


def test_mapping_set_lookups_reference_earlier_mappings() -> None:
    names_before: list[str] = []
    for m in MAPPINGS.mappings:
        for f in m.lookups():
            assert f.lookup is not None
            assert set(f.lookup.mappings) <= set(names_before)
        names_before.append(m.name)
    assert isinstance(MAPPINGS, MappingSet)
