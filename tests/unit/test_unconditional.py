"""The unconditional full synchronization's rules: a coupled record at the
version last synced is compared with its counterpart all the same; what
differs is written per direction, the rest is unchanged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from tablesync.core.couplings import Coupling, Stamp, compare_stamps
from tablesync.core.events import FieldValue, RecordChanged, Side, other_side
from tablesync.core.fieldmap import holds_already, map_values, same_value
from tablesync.core.mappings import (
    FieldMapping,
    MappingDirection,
    MappingSet,
    TableMapping,
    UpdateConflictPolicy,
)
from tablesync.core.plan import (
    Decision,
    FetchDestination,
    JobContext,
    Skip,
    Unchanged,
    Update,
    at_rest_winner,
    counters_of,
    decide_coupled,
    triage,
)
from tablesync.core.records import Row
from tests.strategies import apply_couplings, apply_events

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
BC_ID = "11111111-1111-1111-1111-111111111111"
DV_ID = "22222222-2222-2222-2222-222222222222"
# BC customer fields and the account columns they pair with: plain text, no
# transform, so a value reads back as written.
PAIRS = (
    ("displayName", "name"),
    ("city", "address1_city"),
    ("phoneNumber", "telephone1"),
    ("email", "emailaddress1"),
    ("website", "websiteurl"),
)
DIRECTIONS: tuple[MappingDirection, ...] = ("bidirectional", "to_integration", "from_integration")
POLICIES: tuple[UpdateConflictPolicy, ...] = ("none", "send_to_integration", "get_from_integration")
PLAIN = JobContext("job", "full", ignore_only_coupled=True)
UNCONDITIONAL = replace(PLAIN, unconditional=True)

_texts = st.text(alphabet="ab", min_size=1, max_size=2)


def _mapping(
    field_directions: tuple[MappingDirection, ...],
    policy: UpdateConflictPolicy,
    direction: MappingDirection = "bidirectional",
) -> TableMapping:
    fields = tuple(
        FieldMapping(bc, dv, direction=d)
        for (bc, dv), d in zip(PAIRS, field_directions, strict=False)
    )
    return TableMapping(
        "T",
        "customers",
        "accounts",
        direction,
        fields,
        sync_only_coupled=False,
        update_conflict=policy,
    )


@st.composite
def _cases(draw: st.DrawFn) -> tuple[TableMapping, dict[str, FieldValue], dict[str, FieldValue]]:
    n = draw(st.integers(1, len(PAIRS)))
    directions = tuple(draw(st.sampled_from(DIRECTIONS)) for _ in range(n))
    mapping = _mapping(directions, draw(st.sampled_from(POLICIES)))
    bc = {b: draw(_texts) for b, _ in PAIRS[:n]}
    dv = {d: draw(_texts) for _, d in PAIRS[:n]}
    return mapping, bc, dv


class _Pair:
    """Two coupled records and their coupling, written as the runtime writes them."""

    def __init__(self, bc: dict[str, FieldValue], dv: dict[str, FieldValue]) -> None:
        self.fields: dict[Side, dict[str, FieldValue]] = {"bc": dict(bc), "dataverse": dict(dv)}
        self.version: dict[Side, int] = {"bc": 1, "dataverse": 1}
        self.coupling = Coupling(
            "T", BC_ID, DV_ID, None, self._stamp("bc"), self._stamp("dataverse")
        )

    def _stamp(self, side: Side) -> Stamp:
        return Stamp(T0 + timedelta(seconds=self.version[side]), f'W/"{self.version[side]}"')

    def row(self, side: Side) -> Row:
        stamp = self._stamp(side)
        record_id = BC_ID if side == "bc" else DV_ID
        return Row(record_id, stamp.modified_at, stamp.etag, dict(self.fields[side]))

    def event(self, side: Side) -> RecordChanged:
        row = self.row(side)
        return RecordChanged(
            side=side,
            table="customers" if side == "bc" else "accounts",
            record_id=row.id,
            op="upsert",
            modified_at=row.modified_at,
            captured_at=T0,
            fields=row.fields,
            etag=row.etag,
            snapshot_job_id="job",
        )

    def user_edit(self, side: Side, name: str, value: FieldValue) -> None:
        self.fields[side][name] = value
        self.version[side] += 1

    def step(self, mapping: TableMapping, source: Side, job: JobContext) -> Decision:
        """One direction step of a full sync for this record, performed."""
        event = self.event(source)
        t = triage(event, mapping, job, self.coupling)
        if not isinstance(t, FetchDestination):
            assert isinstance(t, Unchanged)
            return t
        direction = "to_integration" if source == "bc" else "from_integration"
        values = map_values(mapping, direction, event.fields, {}, MappingSet(()), creating=False)
        d = decide_coupled(
            event, mapping, t.coupling, self.row(t.side), values, unconditional=t.unconditional
        )
        if isinstance(d, Update):
            self.fields[d.side].update(d.payload)  # type: ignore[arg-type]
            self.version[d.side] += 1
            self.coupling = d.coupling.with_stamp(d.side, self._stamp(d.side))
        elif isinstance(d, Unchanged) and d.coupling is not None:
            self.coupling = d.coupling
        return d

    def run(self, mapping: TableMapping, job: JobContext) -> list[Decision]:
        # BC -> Dataverse first, then back, as the coordinator runs the steps.
        return [self.step(mapping, s, job) for s in ("bc", "dataverse") if _allows(mapping, s)]


def _allows(mapping: TableMapping, source: Side) -> bool:
    return mapping.allows("to_integration" if source == "bc" else "from_integration")


# triage


@given(apply_events(), apply_couplings())
def test_unconditional_only_fetches_what_the_plain_rule_leaves_unchanged_at_its_version(
    event: RecordChanged, coupling: Coupling
) -> None:
    mapping = _mapping(("bidirectional",), "none")
    plain = triage(event, mapping, PLAIN, coupling)
    unconditional = triage(event, mapping, UNCONDITIONAL, coupling)
    fresh = compare_stamps(
        event.side, Stamp(event.modified_at, event.etag), coupling.stamp_on(event.side)
    )
    if event.op == "upsert" and fresh == "same":
        assert isinstance(plain, Unchanged)
        side = other_side(event.side)
        assert unconditional == FetchDestination(
            side, coupling.id_on(side), coupling, unconditional=True
        )
    else:
        # A newer version is compared anyway, an older one never wins, and
        # deletions and uncoupled records follow their own rules.
        assert unconditional == plain


@given(apply_events(), apply_couplings())
def test_a_replay_reapplies_as_before_even_in_an_unconditional_job(
    event: RecordChanged, coupling: Coupling
) -> None:
    mapping = _mapping(("bidirectional",), "none")
    replay = JobContext("job", "replay", reapply=True)
    both = replace(replay, unconditional=True)
    plain, unconditional = (
        triage(event, mapping, replay, coupling),
        triage(event, mapping, both, coupling),
    )
    if isinstance(plain, FetchDestination):
        # The version a replay applies again is decided as a change of its own.
        assert unconditional == plain


# the decision, and a full run of both steps


@given(_cases())
def test_an_unconditional_run_writes_each_direction_once_then_counts_everything_unchanged(
    case: tuple[TableMapping, dict[str, FieldValue], dict[str, FieldValue]],
) -> None:
    mapping, bc, dv = case
    pair = _Pair(bc, dv)
    # Nothing changed since the last sync: a plain full sync writes nothing.
    assert all(isinstance(d, Unchanged) for d in pair.run(mapping, PLAIN))
    assert pair.fields == {"bc": bc, "dataverse": dv}
    first = pair.run(mapping, UNCONDITIONAL)
    winner = at_rest_winner(mapping)
    for f in mapping.fields:
        assert f.bc is not None and f.dataverse is not None
        # A one-way field takes its source's value; a field both ways carry
        # takes the value of the side that wins with nothing changed.
        if f.direction == "to_integration":
            value = bc[f.bc]
        elif f.direction == "from_integration":
            value = dv[f.dataverse]
        else:
            value = bc[f.bc] if winner == "bc" else dv[f.dataverse]
        assert pair.fields["bc"][f.bc] == value
        assert pair.fields["dataverse"][f.dataverse] == value
    # Each step counts modified exactly when it wrote what differed, and
    # unchanged when the records already agreed on what it carries.
    for d in first:
        assert counters_of(d) in (("modified",), ("unchanged",))
    agreed = all(bc[f.bc] == dv[f.dataverse] for f in mapping.fields)  # type: ignore[index]
    assert agreed == all(isinstance(d, Unchanged) for d in first)
    # A second unconditional run finds nothing to write.
    again = pair.run(mapping, UNCONDITIONAL)
    assert [counters_of(d) for d in again] == [("unchanged",)] * len(again)


@given(_cases())
def test_a_counterpart_changed_since_the_last_sync_keeps_what_flows_back(
    case: tuple[TableMapping, dict[str, FieldValue], dict[str, FieldValue]],
) -> None:
    mapping, bc, dv = case
    pair = _Pair(bc, dv)
    # A user's edit in Dataverse that has not synced back yet.
    pair.user_edit("dataverse", PAIRS[0][1], "zz")
    d = pair.step(mapping, "bc", UNCONDITIONAL)
    carried_back = {f.dataverse for f in mapping.fields_for("from_integration")}
    if isinstance(d, Update):
        assert not set(d.payload) & carried_back
        assert mapping.update_conflict == "send_to_integration"
    elif isinstance(d, Skip):
        assert d.error == (mapping.update_conflict == "none")
    else:
        assert isinstance(d, Unchanged)
    # The user's edit is overwritten only where it never flows back and the
    # mapping's policy lets BC win a conflict.
    overwritten = pair.fields["dataverse"][PAIRS[0][1]] != "zz"
    assert overwritten == (
        PAIRS[0][1] not in carried_back
        and mapping.update_conflict == "send_to_integration"
        and bc[PAIRS[0][0]] != "zz"
    )


def test_a_one_way_mapping_writes_its_fields_whatever_the_policy() -> None:
    for policy in POLICIES:
        mapping = _mapping(("bidirectional", "bidirectional"), policy, direction="to_integration")
        pair = _Pair({"displayName": "a", "city": "b"}, {"name": "b", "address1_city": "b"})
        [d] = pair.run(mapping, UNCONDITIONAL)
        assert isinstance(d, Update) and d.payload == {"name": "a"}
        assert [counters_of(d) for d in pair.run(mapping, UNCONDITIONAL)] == [("unchanged",)]


def test_a_shortened_value_is_not_written_back_over_the_longer_original() -> None:
    # BC's 4 characters reach Dataverse as 2: the step back finds its own
    # write there and leaves BC's value alone.
    shortened = FieldMapping("displayName", "name")
    shortened = replace(shortened, transform=replace(shortened.transform, max_length=2))
    mapping = replace(_mapping((), "none"), fields=(shortened,))
    pair = _Pair({"displayName": "abab"}, {"name": "b"})
    first = pair.run(mapping, UNCONDITIONAL)
    assert [type(d) for d in first] == [Update, Unchanged]
    assert pair.fields == {"bc": {"displayName": "abab"}, "dataverse": {"name": "ab"}}


def test_a_value_cut_on_its_way_to_bc_does_not_come_back_and_cut_the_original() -> None:
    # A Dataverse account made the BC customer, its name cut to fit BC's
    # field; BC wins a conflict, yet nothing changed: the account keeps the
    # longer original, of which BC's value is all BC can hold.
    cut = FieldMapping("displayName", "name")
    cut = replace(cut, transform=replace(cut.transform, max_length=2))
    for policy in POLICIES:
        mapping = replace(_mapping((), policy), fields=(cut,))
        pair = _Pair({"displayName": "ab"}, {"name": "abab"})
        assert [counters_of(d) for d in pair.run(mapping, UNCONDITIONAL)] == [("unchanged",)] * 2
        assert pair.fields == {"bc": {"displayName": "ab"}, "dataverse": {"name": "abab"}}
        # A value that says something else is written as before.
        pair = _Pair({"displayName": "ab"}, {"name": "baba"})
        assert any(isinstance(d, Update) for d in pair.run(mapping, UNCONDITIONAL))
        assert pair.fields["bc"]["displayName"] == pair.fields["dataverse"]["name"][:2]


@given(st.text(max_size=12), st.text(max_size=12), st.integers(1, 8), st.booleans())
# Upper-cased, a text of the limit's length grows past it ('ß' becomes 'SS').
@example("ß", "", 1, True)
def test_a_longer_text_holds_already_exactly_what_its_cut_says(
    existing: str, value: str, limit: int, code: bool
) -> None:
    transform = replace(FieldMapping("displayName", "name").transform, max_length=limit, code=code)
    cut = (existing.strip().upper() if code else existing)[:limit]
    # What the longer text becomes on its way to the shorter field is held already.
    assert holds_already(existing, cut, transform)
    if len(existing) <= limit:
        return
    # Any other value is held only when it is the same value.
    assert holds_already(existing, value, transform) == (
        same_value(existing, value, code=code) or same_value(cut, value, code=code)
    )
