"""The rules of what capture publishes (``core.capture_rules``): de-duplication within
the look-back, the echoes of tablesync's own writes, what a reconcile finds missed, and
which vanished ids count as deleted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.capture_rules import (
    Overreach,
    Seen,
    confirmed,
    forget_before,
    missed,
    overreach,
    remember,
    scan_pause,
    synced_already,
    unpublished,
    vanished,
    version_of,
    within_share,
)
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.decision import event_of
from tablesync.core.events import Side
from tablesync.core.plan import JobContext, Unchanged, triage
from tablesync.core.records import Row
from tests.strategies import (
    CAPTURE_IDS,
    capture_id_sets,
    capture_rows,
    capture_seen,
    capture_synced,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
shares = st.floats(0.0, 1.0, allow_nan=False)
_, _MAPPINGS = load_mapping_file(default_mapping_file())
# Both directions and no filter: triage's answer is the stamps' alone.
_UNFILTERED = replace(_MAPPINGS.get("CUSTOMER"), table_filter=None, integration_table_filter=None)
_OTHER = "ffffffff-0000-0000-0000-000000000000"


# ------------------------------------------------------------ de-duplication


@given(st.lists(capture_rows()), capture_seen())
def test_a_version_published_already_is_not_published_again(
    rows: list[Row], recent: dict[str, Seen]
) -> None:
    picked = unpublished(rows, recent)

    for row in picked:
        seen = recent.get(row.id)
        assert seen is None or seen.version != version_of(row)
    pairs = [(r.id, version_of(r)) for r in picked]
    assert len(pairs) == len(set(pairs))
    assert {(r.id, version_of(r)) for r in rows} - set(pairs) <= {
        (rid, s.version) for rid, s in recent.items()
    }
    # In the order read: the rows picked are a subsequence of the rows.
    rest = iter(rows)
    assert all(any(r is p for r in rest) for p in picked)


@given(st.lists(capture_rows()), capture_seen())
def test_rows_read_again_after_publishing_cost_nothing(
    rows: list[Row], recent: dict[str, Seen]
) -> None:
    # One version per id, as a read at one moment returns them.
    latest = list({r.id: r for r in rows}.values())
    published = remember(recent, unpublished(latest, recent))

    assert unpublished(latest, published) == []


@given(capture_seen(), st.integers(0, 40))
def test_forgetting_keeps_exactly_what_a_poll_can_meet_again(
    recent: dict[str, Seen], seconds: int
) -> None:
    floor = T0 + timedelta(seconds=seconds)

    kept = forget_before(recent, floor)

    assert kept == {rid: s for rid, s in recent.items() if s.stamp >= floor}


# ------------------------------------------------------------ echoes


@given(st.sampled_from(["bc", "dataverse"]), st.lists(capture_rows()), capture_synced())
def test_an_echo_is_exactly_a_row_whose_event_apply_would_find_unchanged(
    side: Side, rows: list[Row], synced: dict[str, Stamp]
) -> None:
    picked = synced_already(side, rows, synced)

    continuous = JobContext(job_id=None, kind="continuous")
    table = _UNFILTERED.table(side)
    unchanged = []
    for row in rows:
        stamp = synced.get(row.id)
        coupling = None
        if stamp is not None:
            stamps = {"bc": stamp, "dataverse": stamp}
            ids = {side: row.id, ("dataverse" if side == "bc" else "bc"): _OTHER}
            coupling = Coupling.between("CUSTOMER", ids, stamps, None)  # type: ignore[arg-type]
        if isinstance(
            triage(event_of(row, side, table), _UNFILTERED, continuous, coupling), Unchanged
        ):
            unchanged.append(row)
    assert picked == unchanged


def test_a_users_edit_after_tablesyncs_write_is_no_echo() -> None:
    written = Row(CAPTURE_IDS[0], T0, 'W/"7"')
    synced = {written.id: Stamp(written.modified_at, written.etag)}
    edited = Row(written.id, T0 + timedelta(milliseconds=1), 'W/"8"')
    late = Row(written.id, T0 - timedelta(seconds=1), 'W/"6"')
    uncoupled = Row(CAPTURE_IDS[1], T0, 'W/"7"')

    assert synced_already("dataverse", [written, edited, late, uncoupled], synced) == [
        written,
        late,
    ]
    # BC's ETag orders nothing: the same stamp with another ETag is a new version.
    same_moment = Row(written.id, T0, 'W/"JzE7"')
    assert synced_already("bc", [written, same_moment, edited], synced) == [written]


def test_a_late_commit_within_the_look_back_is_published_once() -> None:
    published = Row(CAPTURE_IDS[0], T0 + timedelta(seconds=30), 'W/"1"')
    late = Row(CAPTURE_IDS[1], T0 + timedelta(seconds=5), 'W/"1"')
    recent = remember({}, [published])

    # The look-back pass reads from 20 s before the checkpoint: both rows, one new.
    first = unpublished([late, published], forget_before(recent, T0))
    again = unpublished([late, published], remember(recent, first))

    assert first == [late]
    assert again == []


# ------------------------------------------------------------ reconcile


@given(st.lists(capture_rows()), st.dictionaries(st.sampled_from(CAPTURE_IDS), st.text()))
def test_a_reconcile_finds_old_rows_whose_version_capture_never_read(
    rows: list[Row], known: dict[str, str]
) -> None:
    horizon = T0 + timedelta(seconds=20)

    found = missed(rows, known, horizon)

    assert found == [
        r.id for r in rows if r.modified_at < horizon and known.get(r.id) != version_of(r)
    ]
    latest = list({r.id: r for r in rows}.values())
    assert missed(latest, {**known, **{r.id: version_of(r) for r in latest}}, horizon) == []


def test_a_reconcile_leaves_new_rows_to_the_polls() -> None:
    old = Row(CAPTURE_IDS[0], T0, 'W/"2"')
    new = Row(CAPTURE_IDS[1], T0 + timedelta(minutes=30), 'W/"1"')

    assert missed([old, new], {CAPTURE_IDS[0]: 'W/"1"'}, T0 + timedelta(minutes=20)) == [old.id]
    assert missed([old], {CAPTURE_IDS[0]: 'W/"2"'}, T0 + timedelta(minutes=20)) == []


# ------------------------------------------------------------ deletions


@given(capture_id_sets(), capture_id_sets(), capture_id_sets())
def test_vanished_ids_are_coupled_unlisted_and_not_published_yet(
    coupled: set[str], present: set[str], published: set[str]
) -> None:
    gone = vanished(coupled, present, published)

    assert gone == coupled - present - published


@given(capture_id_sets(), capture_id_sets())
def test_only_ids_a_direct_read_did_not_find_count_as_deleted(
    candidates: set[str], found: set[str]
) -> None:
    deleted = confirmed(candidates, found)

    assert set(deleted) == candidates - found
    assert deleted == sorted(deleted)


@given(st.integers(0, 10_000), st.integers(0, 10_000), shares, st.integers(0, 20))
def test_the_share_is_a_cap_above_a_few_records(
    gone: int, coupled: int, share: float, at_least: int
) -> None:
    allowed = within_share(gone, coupled, share, at_least)

    assert allowed == (gone <= at_least or gone <= share * coupled + 1e-6)
    assert within_share(min(gone, at_least), coupled, share, at_least)
    if allowed and gone > 0:
        assert within_share(gone - 1, coupled, share, at_least)


def test_five_percent_of_a_thousand_may_go_and_more_may_not() -> None:
    assert within_share(50, 1000, 0.05, 10)
    assert not within_share(51, 1000, 0.05, 10)
    assert within_share(10, 20, 0.05, 10)
    assert not within_share(11, 20, 0.05, 10)
    assert within_share(29, 100, 0.29, 0)


@given(
    st.dictionaries(st.sampled_from(["CUSTOMER", "CONTACTS"]), capture_id_sets()),
    capture_id_sets(),
    shares,
    st.integers(0, 4),
)
def test_a_scan_stops_for_every_mapping_it_would_strip_past_its_share(
    coupled_by_mapping: dict[str, set[str]], gone: set[str], share: float, at_least: int
) -> None:
    halts = overreach(coupled_by_mapping, gone, share, at_least)

    expected = [
        Overreach(m, len(gone & ids), len(ids))
        for m, ids in sorted(coupled_by_mapping.items())
        if not within_share(len(gone & ids), len(ids), share, at_least)
    ]
    assert halts == expected
    # Losing more never lifts a halt.
    more = overreach(coupled_by_mapping, gone | set(CAPTURE_IDS[:3]), share, at_least)
    assert {h.mapping for h in halts} <= {h.mapping for h in more}


def test_an_empty_listing_of_a_coupled_table_stops_the_scan() -> None:
    coupled = set(CAPTURE_IDS)

    halts = overreach({"CUSTOMER": coupled}, vanished(coupled, set(), set()), 0.05, 10)

    assert halts == [Overreach("CUSTOMER", len(coupled), len(coupled))]
    assert overreach({"CUSTOMER": coupled}, set(CAPTURE_IDS[:10]), 0.05, 10) == []


@given(st.integers(0, 10_000), st.floats(0.1, 3600), st.floats(0.01, 10_000))
def test_scans_are_spaced_to_their_request_share_and_never_closer_than_the_interval(
    requests: int, interval_s: float, per_min: float
) -> None:
    pause = scan_pause(requests, interval_s, per_min)
    assert pause >= interval_s
    # The round's requests spread over the pause average at most the share...
    assert requests * 60.0 / pause <= per_min * (1 + 1e-9)
    # ...and the pause is no longer than that needs.
    assert pause == interval_s or abs(requests * 60.0 / pause - per_min) <= per_min * 1e-9


def test_a_scan_of_two_large_bc_tables_waits_for_its_share() -> None:
    # 100,000 customers and 100,000 contacts in pages of 5,000: 40 requests.
    assert scan_pause(40, 30.0, 60.0) == 40.0
    assert scan_pause(10, 30.0, 60.0) == 30.0
    assert scan_pause(4_000, 30.0, 0) == 30.0
