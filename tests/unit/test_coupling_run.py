"""A coupling run's rules (BC's match-based coupling): match and couple; create
and write only when asked; count what found no match."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.plan import (
    COUNTED,
    Create,
    Fail,
    FetchCandidates,
    Ignore,
    JobContext,
    Unchanged,
    counters_of,
    decide_uncoupled,
    triage,
)
from tablesync.core.records import Row
from tests.unit.test_plan import CUSTOMER, DV_ID, T0, account, coupling, customer, event, mapped

COUPLING = JobContext("job", "coupling", coupling_run=True)
OTHER_ID = "55555555-5555-5555-5555-555555555555"


def _decide(job: JobContext, candidates: list[Row], city: str = "Boston") -> object:
    e = event("bc", customer(city=city), job="job")
    t = triage(e, CUSTOMER, job, None)
    assert isinstance(t, FetchCandidates) and t.coupling_run == job
    return decide_uncoupled(e, CUSTOMER, mapped(e, creating=True), candidates, job=t.coupling_run)


def test_one_match_is_coupled_and_nothing_is_written() -> None:
    match = Row(DV_ID, T0, 'W/"7"', account())
    d = _decide(COUPLING, [match])
    assert isinstance(d, Create) and d.matched == match and d.record_id == DV_ID
    assert d.payload == {}
    assert counters_of(d) == ("unchanged", "coupled")


def test_with_sync_after_the_match_gets_the_mapped_values() -> None:
    match = Row(DV_ID, T0, 'W/"7"', account())
    d = _decide(replace(COUPLING, sync_after=True), [match])
    assert isinstance(d, Create) and d.payload == {"address1_city": "Boston"}
    assert counters_of(d) == ("modified", "coupled")


def test_no_match_is_counted_unmatched_unless_creating_is_asked() -> None:
    d = _decide(COUPLING, [])
    assert isinstance(d, Ignore) and counters_of(d) == ("unmatched",)
    assert "unmatched" in COUNTED
    made = _decide(replace(COUPLING, create_unmatched=True), [])
    assert isinstance(made, Create) and made.matched is None
    assert counters_of(made) == ("inserted",)


def test_an_ambiguous_match_fails_and_is_listed() -> None:
    match = Row(DV_ID, T0, 'W/"7"', account())
    d = _decide(replace(COUPLING, create_unmatched=True), [match, replace(match, id=OTHER_ID)])
    assert isinstance(d, Fail) and "no unique uncoupled matching record" in d.message


def test_a_coupling_run_leaves_coupled_and_deleted_records_alone() -> None:
    e = event("bc", customer(city="Elsewhere"), at=T0.replace(hour=11))
    assert isinstance(triage(e, CUSTOMER, COUPLING, coupling()), Unchanged)
    gone = event("bc", {}, op="delete")
    assert isinstance(triage(gone, CUSTOMER, COUPLING, coupling()), Ignore)
    assert isinstance(triage(gone, CUSTOMER, COUPLING, None), Ignore)


@given(
    only_coupled=st.booleans(),
    create=st.booleans(),
    sync=st.booleans(),
    matches=st.integers(0, 3),
)
def test_a_coupling_run_never_creates_unasked_and_never_writes_without_sync_after(
    only_coupled: bool, create: bool, sync: bool, matches: int
) -> None:
    job = replace(COUPLING, create_unmatched=create, sync_after=sync)
    mapping = replace(CUSTOMER, sync_only_coupled=only_coupled)
    candidates = [
        Row(f"{n:08d}-0000-0000-0000-000000000000", T0, None, account()) for n in range(matches)
    ]
    e = event("bc", customer(city="Boston"), job="job")
    t = triage(e, mapping, job, None)
    # "Sync only coupled records" does not keep a coupling run from matching.
    assert isinstance(t, FetchCandidates)
    d = decide_uncoupled(e, mapping, mapped(e, creating=True), candidates, job=t.coupling_run)
    if isinstance(d, Create) and d.matched is None:
        assert create and matches == 0
    if isinstance(d, Create) and d.matched is not None:
        assert matches == 1
        assert bool(d.payload) == sync
    if matches > 1:
        assert isinstance(d, Fail)
    if matches == 0 and not create:
        assert counters_of(d) == ("unmatched",)
