"""What a performed decision leaves in the state, and where it counts, once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.counting import (
    Performed,
    Record,
    continuous_job_id,
    counted_towards,
    counts_made_pair,
    interval_start,
    record,
    run_job,
)
from tablesync.core.coupling_rules import row_stamp
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.decision import Facts
from tablesync.core.effects import (
    BatchEffects,
    DueRecord,
    Intent,
    LogEntry,
    WriteTarget,
    counted_removals,
)
from tablesync.core.events import FieldValue, RecordChanged
from tablesync.core.plan import (
    Create,
    Decision,
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
    counters_of,
    stamp_of,
)
from tablesync.core.records import Row
from tablesync.core.recovery import Announced
from tablesync.core.retry import RetryPolicy
from tests.strategies import (
    apply_decisions,
    apply_events,
    apply_intents,
    apply_rows,
    due_records,
    retry_policies,
)

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
NOW = T1 + timedelta(seconds=1)
POLICY = RetryPolicy(skip_after_failures=3, backoff_s=2.0, backoff_max_s=60.0)
PAIR = Coupling("CUSTOMER", "bc1", "dv1", "C1", Stamp(T0, 'W/"b1"'), Stamp(T0, 'W/"1"'))
EVENT = RecordChanged("bc", "customers", "bc1", "upsert", T1, T1, {"number": "C1"}, 'W/"b2"')
SOURCE = ("bc", "bc1")


def _record(
    d: Decision,
    facts: Facts | None = None,
    *,
    previous: DueRecord | None = None,
    retry: bool = False,
    made_in: str | None = None,
    written: Row | None = None,
    create_announced: bool = False,
    refused: bool = False,
) -> Record:
    f = facts or Facts(EVENT, FetchDestination("dataverse", "dv1", PAIR), PAIR)
    return record(
        CUSTOMER,
        f,
        Performed(d, written=written, create_announced=create_announced, refused=refused),
        previous,
        job_id="job",
        made_in=made_in,
        policy=POLICY,
        now=NOW,
        retry=retry,
        raw=b"raw",
    )


def _due(status: str, message: str, same: int = 1) -> DueRecord:
    return DueRecord("CUSTOMER", "bc", "bc1", status, message, same, same, b"raw")


# Where


def test_a_record_counts_in_the_run_that_counts_its_direction() -> None:
    full = JobContext("job", "full")
    one_way = JobContext("job", "full", direction="to_integration")
    assert run_job(full, "from_integration") == "job"
    assert run_job(one_way, "to_integration") == "job"
    assert run_job(one_way, "from_integration") is None
    assert run_job(JobContext(None, "continuous"), "to_integration") is None


def test_a_write_counts_towards_the_side_it_wrote_to() -> None:
    assert counted_towards(Remove("bc", "bc1", PAIR), "bc") == "from_integration"
    assert counted_towards(Update("dataverse", "dv1", {}, None, PAIR), "bc") == "to_integration"
    assert counted_towards(Unchanged(), "dataverse") == "from_integration"


@given(st.datetimes(timezones=st.just(UTC)), st.sampled_from([60.0, 300.0, 3600.0]))
def test_a_continuous_job_is_one_per_interval(now: datetime, interval: float) -> None:
    start = interval_start(now, interval)
    assert start <= now < start + timedelta(seconds=interval)
    assert interval_start(start, interval) == start
    job = continuous_job_id("CUSTOMER", "to_integration", start)
    assert job == continuous_job_id("CUSTOMER", "to_integration", interval_start(now, interval))
    assert job != continuous_job_id("CUSTOMER", "from_integration", start)


# What, once


def test_a_create_couples_what_it_made_and_settles_its_intent() -> None:
    made = Row("dv9", T1, 'W/"5"', {})
    create = Create("dataverse", {"name": "A"}, "dv9", "bc1", stamp_of(EVENT))
    r = _record(create, Facts(EVENT, FetchCandidates("dataverse", None)), written=made)
    ((coupling, direction),) = r.couplings
    assert (coupling.bc_id, coupling.dv_id, direction) == ("bc1", "dv9", "to_integration")
    assert r.resolved_intents == (SOURCE,)
    assert r.counts == (("job", ("inserted",)),)
    assert r.status is None and r.error is None


def test_a_refused_create_holds_nothing_back() -> None:
    refused = Fail("already exists (HTTP 400)")
    r = _record(
        refused,
        Facts(EVENT, FetchCandidates("dataverse", None)),
        create_announced=True,
        refused=True,
    )
    assert SOURCE in r.resolved_intents and r.couplings == ()
    assert r.status is not None and r.status.status == "failed"


def test_a_match_counts_modified_and_coupled_and_settles_an_interrupted_create() -> None:
    found = Row("dv9", T0, 'W/"5"', {})
    create = Create("dataverse", {"name": "A"}, "dv9", "bc1", stamp_of(EVENT), matched=found)
    intent = Intent("CUSTOMER", "bc", "bc1", None, T0)
    r = _record(create, Facts(EVENT, FetchCandidates("dataverse", None), intent=intent))
    assert r.counts == (("job", ("modified", "coupled")),)
    assert r.couplings[0][0].dv_stamp == row_stamp(found)
    assert r.resolved_intents == (SOURCE,)


def test_an_update_keeps_the_stamp_the_write_left() -> None:
    update = Update(
        "dataverse", "dv1", {"name": "A"}, 'W/"1"', PAIR.with_stamp("bc", stamp_of(EVENT))
    )
    written = Row("dv1", T1, 'W/"2"', {})
    ((coupling, direction),) = _record(update, written=written).couplings
    assert coupling.dv_stamp == Stamp(T1, 'W/"2"') and coupling.bc_stamp == stamp_of(EVENT)
    assert direction == "to_integration"


def test_an_update_of_a_record_changed_since_the_last_sync_is_synced_as_read() -> None:
    update = Update(
        "dataverse", "dv1", {"phone": "1"}, 'W/"3"', PAIR.with_stamp("bc", stamp_of(EVENT))
    )
    read = Row("dv1", T0 + timedelta(minutes=1), 'W/"3"', {})
    changed = Facts(
        EVENT,
        FetchDestination("dataverse", "dv1", PAIR),
        PAIR,
        destination=read,
        destination_changed=True,
    )
    written = Row("dv1", T1, 'W/"4"', {})
    ((coupling, _),) = _record(update, changed, written=written).couplings
    # Synced as read (W/"3"): the version the write left (W/"4") still carries
    # the user's change on Dataverse back; the versions before it do not.
    assert coupling.dv_stamp == row_stamp(read) and coupling.bc_stamp == stamp_of(EVENT)


def test_a_removal_counts_only_if_its_commit_removes_the_coupling() -> None:
    r = _record(Remove("dataverse", "dv1", PAIR))
    assert r.uncoupled == (PAIR,) and r.deleted == (("bc", "bc1"), ("dataverse", "dv1"))
    assert r.counts == () and r.counts_if_uncoupled == ((PAIR, "job", ("deleted", "uncoupled")),)
    gone = _record(Uncouple(PAIR, "deleted in Dataverse", ("dataverse",)))
    assert gone.deleted == (("dataverse", "dv1"),)
    assert gone.counts_if_uncoupled == ((PAIR, "job", ("uncoupled",)),)


def test_the_pair_an_interrupted_create_made_counts_inserted_where_it_was_made() -> None:
    paired = Facts(EVENT, FetchDestination("dataverse", "dv1", PAIR), PAIR, paired=True)
    r = _record(Remove("dataverse", "dv1", PAIR), paired, made_in="made-here")
    # Made (and counted) before it is removed, in the same commit.
    assert r.couplings == ((PAIR, "to_integration"),)
    # The insert is the interrupted attempt's: counted apart from the
    # event's own removal, so the event counts once on its partition.
    assert r.recovered == (("made-here", ("inserted",)),)
    assert r.counts == ()
    assert r.counts_if_uncoupled == ((PAIR, "job", ("deleted", "uncoupled")),)
    assert counts_made_pair(paired, MarkDeleted(PAIR, "x"))
    assert not counts_made_pair(paired, Unchanged())


def test_a_pending_record_is_listed_and_reported_once() -> None:
    first = _record(Pending("currency EUR is not coupled"))
    assert first.status is not None and first.status.status == "pending"
    assert first.status.reason == "lookup" and first.status.next_attempt_at == NOW + timedelta(
        seconds=2
    )
    assert first.error is not None and first.failure is not None
    again = _record(
        Pending("currency EUR is not coupled"),
        previous=_due("pending", "currency EUR is not coupled"),
        retry=True,
    )
    assert again.error is None and again.failure is None
    # A retry that fails again is listed already: not counted again.
    assert again.counts == () and again.cleared == ()


def test_a_failure_repeated_is_given_up_and_its_announced_create_let_go() -> None:
    intent = Intent("CUSTOMER", "bc", "bc1", None, T0)
    facts = Facts(EVENT, FetchCandidates("dataverse", None), intent=intent)
    r = _record(Fail("boom"), facts, previous=_due("failed", "boom", same=2))
    assert r.status is not None and r.status.status == "skipped"
    assert r.failure is not None and r.failure.skipped
    assert SOURCE in r.resolved_intents
    # Not given up yet: the intent keeps holding the other side's look-alikes.
    assert SOURCE not in _record(Fail("boom"), facts).resolved_intents


def test_tablesyncs_own_write_is_settled_unless_the_record_is_retried() -> None:
    image: dict[str, FieldValue] = {"name": "A"}
    facts = Facts(EVENT, FetchDestination("dataverse", "dv1", PAIR), PAIR, written_here=(image,))
    own: WriteTarget = ("bc", "bc1", "update")
    assert own in _record(Unchanged(PAIR), facts).resolved_writes
    assert own not in _record(Pending("waiting"), facts).resolved_writes
    assert own not in _record(Fail("boom", True), facts).resolved_writes
    # Given up: nothing will decide it again.
    given_up = _record(Fail("boom"), facts, previous=_due("failed", "boom", same=2))
    assert own in given_up.resolved_writes


def test_the_echo_of_an_earlier_write_leaves_the_latest_writes_image_known() -> None:
    """Seed instances 400778: two updates of one BC record were announced, the
    second by an attempt that crashed after its write. The echo of the first,
    decided, settled both; the echo of the second then had no image and was
    taken for a user's change, and written over newer Dataverse edits."""
    first = {"number": "C1", "displayName": "v4", "phoneNumber": "1"}
    latest = {"number": "C1", "displayName": "v7", "phoneNumber": "5"}
    own: WriteTarget = ("bc", "bc1", "update")

    def facts(fields: dict[str, FieldValue]) -> Facts:
        event = replace(EVENT, fields=fields)
        return Facts(
            event, FetchDestination("dataverse", "dv1", PAIR), PAIR, written_here=(first, latest)
        )

    assert own not in _record(Unchanged(PAIR), facts(first)).resolved_writes
    assert own in _record(Unchanged(PAIR), facts(latest)).resolved_writes
    # A user's change since: no later echo of tablesync's is to come.
    edited = {**latest, "phoneNumber": "9"}
    assert own in _record(Unchanged(PAIR), facts(edited)).resolved_writes
    # Seed faults 501875: the pair removed, no echo of it is decided again.
    assert own in _record(Remove("bc", "bc1", PAIR), facts(first)).resolved_writes


def test_tablesyncs_updates_of_what_an_interrupted_create_made_settle_with_it() -> None:
    found = Row("dv9", T0, 'W/"5"', {"name": "A v2"})
    theirs: WriteTarget = ("dataverse", "dv9", "update")
    facts = Facts(
        EVENT,
        FetchCandidates("dataverse", None),
        intent=Intent("CUSTOMER", "bc", "bc1", "dv9", T0, made=True),
        created_before=found,
        written_there=({"name": "A v2"},),
        written_there_by=theirs,
    )
    recovered = Create(
        "dataverse", {}, "dv9", "bc1", stamp_of(EVENT), matched=found, recovered=True
    )
    r = _record(recovered, facts)
    assert SOURCE in r.resolved_intents and theirs in r.resolved_writes
    # Waiting for a lookup, the create stays open, and so do its updates' images.
    assert theirs not in _record(Pending("waiting"), facts).resolved_writes


def test_a_listed_record_that_syncs_is_cleared() -> None:
    assert _record(Unchanged(), previous=_due("failed", "boom")).cleared == (SOURCE,)
    assert _record(Unchanged()).cleared == ()
    assert _record(Skip("conflict", True), previous=_due("failed", "boom")).cleared == ()


_TARGETS: list[WriteTarget] = [("dataverse", "dv1", "update"), ("bc", "bc1", "delete")]
_facts = st.builds(
    Facts,
    apply_events(),
    st.just(FetchCandidates("dataverse", None)),
    coupling=st.one_of(st.none(), st.just(PAIR)),
    paired=st.booleans(),
    created_before=st.one_of(st.none(), apply_rows()),
    intent=st.one_of(st.none(), apply_intents()),
    blocked=st.booleans(),
    announced=st.builds(Announced, all=st.frozensets(st.sampled_from(_TARGETS))),
    written_here=st.sampled_from([(), ({"name": "A"},)]),
)
_performed = st.builds(
    Performed,
    apply_decisions(),
    written=st.one_of(st.none(), apply_rows()),
    source_after=st.one_of(st.none(), apply_rows()),
    create_announced=st.booleans(),
    refused=st.booleans(),
)


@given(
    _facts,
    _performed,
    st.one_of(st.none(), due_records()),
    st.booleans(),
    st.one_of(st.none(), st.just("made")),
    retry_policies(),
)
def test_a_decision_counts_once_where_it_counts(
    f: Facts,
    done: Performed,
    previous: DueRecord | None,
    retry: bool,
    made_in: str | None,
    policy: RetryPolicy,
) -> None:
    d = done.decision
    r = record(
        CUSTOMER,
        f,
        done,
        previous,
        job_id="job",
        made_in=made_in,
        policy=policy,
        now=NOW,
        retry=retry,
        raw=b"raw",
    )
    counted = Counter[str]()
    for job, names in r.counts:
        if job == "job":
            counted.update(names)
    for _, job, names in r.counts_if_uncoupled:
        assert job == "job"
        counted.update(names)
    listed = isinstance(d, MarkDeleted | Pending | Fail) or (isinstance(d, Skip) and d.error)
    # The decision's counters, once; a retry that is still not synced is not counted again.
    expected = Counter(counters_of(d))
    if retry and listed and counters_of(d)[0] != "skipped":
        expected = Counter()
    assert counted == expected
    # Only a removal counts on condition, and only then.
    assert bool(r.counts_if_uncoupled) == (isinstance(d, Remove | Uncouple) and bool(expected))
    assert not [n for job, n in r.counts if job == "made"]
    pair_counted = [n for job, n in r.recovered if job == "made"]
    assert pair_counted == ([("inserted",)] if made_in and counts_made_pair(f, d) else [])
    # Listed when not synced, cleared when synced; reported as the retry policy says.
    assert (r.status is not None) == listed
    # A deletion found flagged already stays listed for the operator.
    stays = f.event.op == "delete" and isinstance(d, Unchanged)
    synced = previous is not None and not listed and not stays
    assert r.cleared == (((f.event.side, f.event.record_id),) if synced else ())
    assert (r.error is None) == (r.failure is None)
    if r.status is not None:
        assert r.status.event == b"raw" and r.status.job_id == "job"
        assert (r.status.next_attempt_at is None) == (r.status.status == "skipped")
        assert r.failure is None or r.failure.skipped == (r.status.status == "skipped")
        if f.blocked:
            assert CUSTOMER.name in r.status.waiting_for
    else:
        assert r.error is None
    # Every announced write is settled; intents settle only the record's own.
    assert f.announced.all <= set(r.resolved_writes)
    assert set(r.resolved_intents) <= {(f.event.side, f.event.record_id)}
    # Couplings name the record decided, or the pair decided on.
    for c, _ in r.couplings:
        if isinstance(d, Create):
            assert c.id_on(f.event.side) == f.event.record_id
        else:
            assert isinstance(d, Update | Unchanged | Remove | Uncouple | MarkDeleted | Restore)
            assert d.coupling is not None
            assert c.bc_id == d.coupling.bc_id or c.dv_id == d.coupling.dv_id
    assert bool(r.uncoupled) == isinstance(d, Remove | Uncouple)
    if isinstance(d, Restore) and done.written is not None:
        assert r.couplings[-1][0].id_on(d.side) == done.written.id


# Deletions seen before their pair is recorded


def test_a_deletion_of_a_record_an_open_create_names_is_kept_as_seen() -> None:
    deleted = RecordChanged("dataverse", "accounts", "dv9", "delete", T1, T1)
    ignored = Ignore("deleted record was not coupled")
    named = _record(ignored, Facts(deleted, ignored, None, blocked=True))
    assert named.deleted == (("dataverse", "dv9"),)
    # Not named by any create: nothing of it was ever tablesync's.
    assert _record(ignored, Facts(deleted, ignored, None)).deleted == ()


def test_a_version_of_an_uncoupled_record_found_gone_is_kept_as_deleted_and_unchanged() -> None:
    gone = Ignore("the record was deleted since this version")
    r = _record(gone, Facts(EVENT, gone, None, source_gone=True))
    assert r.deleted == (SOURCE,)
    # Counted once, as its later versions and its replays are (tombstoned).
    assert r.counts == (("job", ("unchanged",)),)
    tombstoned = _record(Unchanged(), Facts(EVENT, Unchanged(), None, tombstoned=True))
    assert tombstoned.counts == r.counts
    assert _record(gone, Facts(EVENT, gone, None)).deleted == ()


# The record log, written where the counting is


def _logged(r: Record) -> BatchEffects:
    effects = BatchEffects("CUSTOMER")
    r.count_in(effects, "t", 3, recovered_topic="(retry)")
    return effects


def test_a_create_logs_what_it_wrote_by_field_name_only() -> None:
    made = Row("dv9", T1, 'W/"5"', {})
    create = Create("dataverse", {"telephone1": "555", "name": "A"}, "dv9", "bc1", stamp_of(EVENT))
    r = _record(create, Facts(EVENT, FetchCandidates("dataverse", None)), written=made)
    [entry] = _logged(r).log
    assert entry == LogEntry(
        mapping="CUSTOMER",
        company="",
        source_side="bc",
        source_id="bc1",
        counterpart_id="dv9",
        job_id="job",
        decision=("inserted",),
        direction="to_integration",
        fields=("name", "telephone1"),
        message="",
        at=NOW,
    )
    assert "555" not in repr(entry) and "A" not in entry.fields


def test_a_recovered_create_keeps_off_the_fields_a_user_edited_since() -> None:
    found = Row("dv9", T0, 'W/"5"', {})
    create = Create(
        "dataverse",
        {"name": "A", "telephone1": "1"},
        "dv9",
        "bc1",
        stamp_of(EVENT),
        matched=found,
        recovered=True,
        edited=frozenset({"telephone1"}),
    )
    r = _record(create, Facts(EVENT, FetchCandidates("dataverse", None)), written=found)
    [entry] = _logged(r).log
    assert (entry.decision, entry.fields) == (("inserted",), ("name",))


def test_an_update_logs_its_pair_and_an_unchanged_record_writes_nothing() -> None:
    update = Update(
        "dataverse", "dv1", {"name": "A"}, 'W/"1"', PAIR.with_stamp("bc", stamp_of(EVENT))
    )
    [entry] = _logged(_record(update, written=Row("dv1", T1, 'W/"2"', {}))).log
    assert (entry.decision, entry.direction, entry.fields, entry.counterpart_id) == (
        ("modified",),
        "to_integration",
        ("name",),
        "dv1",
    )
    [same] = _logged(_record(Unchanged(PAIR))).log
    assert (same.decision, same.direction, same.fields, same.counterpart_id) == (
        ("unchanged",),
        None,
        (),
        "dv1",
    )


def test_a_failure_logs_its_message_and_a_retry_failing_again_logs_nothing() -> None:
    [entry] = _logged(_record(Fail("HTTP 400: name too long"))).log
    assert (entry.decision, entry.message, entry.direction) == (
        ("failed",),
        "HTTP 400: name too long",
        None,
    )
    again = _record(Fail("HTTP 400"), previous=_due("failed", "HTTP 400"), retry=True)
    assert _logged(again).log == []


def test_an_interrupted_create_is_logged_apart_in_the_job_it_counted_in() -> None:
    f = Facts(EVENT, FetchDestination("dataverse", "dv1", PAIR), PAIR, paired=True)
    r = _record(Remove("dataverse", "dv1", PAIR), f, made_in="made-here")
    effects = _logged(r)
    [made] = effects.log
    assert (made.job_id, made.decision, made.direction) == (
        "made-here",
        ("inserted",),
        "to_integration",
    )
    # The removal itself is logged when its commit removes the coupling.
    [(_, key, names, about)] = effects.if_uncoupled
    assert about is not None and about.entry("CUSTOMER", key[0], names).decision == (
        "deleted",
        "uncoupled",
    )


@given(
    _facts,
    _performed,
    st.one_of(st.none(), due_records()),
    st.booleans(),
    st.one_of(st.none(), st.just("made")),
    retry_policies(),
)
def test_the_record_log_tells_what_the_counters_count(
    f: Facts,
    done: Performed,
    previous: DueRecord | None,
    retry: bool,
    made_in: str | None,
    policy: RetryPolicy,
) -> None:
    r = record(
        CUSTOMER,
        f,
        done,
        previous,
        job_id="job",
        made_in=made_in,
        policy=policy,
        now=NOW,
        retry=retry,
        raw=b"raw",
    )
    effects = _logged(r)
    # As a commit that removes every coupling named would count them.
    for key, names, about in counted_removals(
        effects.if_uncoupled, {(c.mapping, c.bc_id.lower()) for c, *_ in effects.if_uncoupled}
    ):
        effects.count(*key, *names, about=about)
    by_job: dict[str, Counter[str]] = {}
    for (job, _, _), counter in effects.counters.items():
        by_job.setdefault(job, Counter()).update(counter)
    logged: dict[str, Counter[str]] = {}
    for e in effects.log:
        logged.setdefault(e.job_id, Counter()).update(e.decision)
    assert {j: +c for j, c in logged.items()} == {j: +c for j, c in by_job.items() if +c}
    d = done.decision
    for e in effects.log:
        assert (e.source_side, e.source_id) == (f.event.side, f.event.record_id)
        assert e.at == NOW and e.decision
        if e.job_id == "job":
            writes = isinstance(d, Create | Update | Remove | Restore)
            assert (e.direction is not None) <= writes
            assert not e.fields or isinstance(d, Create | Update | Restore)
            assert set(e.fields) <= set(getattr(d, "payload", {}))
