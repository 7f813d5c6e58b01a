"""The sync rules beside a plain model, under duplicated, reordered and replayed events.

Two sides are dicts of rows; every write, by a user or by the rules, appends
an event to that side's log. Hypothesis edits both sides, delivers events in
any order, delivers some again, and drains. After a drain every coupled pair
agrees, no record has two counterparts, and delivering everything again
writes nothing: no event is lost, none is applied twice, none echoes back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import RecordChanged, Side, other_side
from tablesync.core.fieldmap import changes, map_values
from tablesync.core.mappings import FieldMapping, MappingSet, MatchField, TableMapping, Transform
from tablesync.core.plan import (
    Create,
    FetchCandidates,
    FetchDestination,
    Ignore,
    JobContext,
    Pending,
    Skip,
    Unchanged,
    Update,
    decide_coupled,
    decide_uncoupled,
    triage,
)
from tablesync.core.records import Row

MAPPING = TableMapping(
    name="CUSTOMER",
    bc_table="customers",
    dataverse_table="accounts",
    direction="bidirectional",
    fields=(
        FieldMapping("number", "accountnumber", transform=Transform(code=True)),
        FieldMapping("displayName", "name"),
        FieldMapping("city", "address1_city"),
    ),
    sync_only_coupled=False,
    bc_key="number",
    match=(MatchField("number", "accountnumber"),),
    update_conflict="send_to_integration",
)
MAPPINGS = MappingSet((MAPPING,))
JOB = JobContext(None, "continuous")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = st.sampled_from(["Adatum", "Fabrikam", "Contoso", "Litware"])
CITIES = st.sampled_from(["Atlanta", "Boston", "Paris", ""])


@dataclass
class SideModel:
    side: Side
    rows: dict[str, Row] = field(default_factory=dict)
    log: list[RecordChanged] = field(default_factory=list)
    version: int = 0

    def write(self, record_id: str, values: dict[str, object]) -> Row:
        self.version += 1
        old = self.rows.get(record_id)
        fields = dict(old.fields) if old else {}
        fields.update(values)
        stamp = T0 + timedelta(milliseconds=self.version)
        etag = f'W/"{self.version}"' if self.side == "dataverse" else f'W/"bc{self.version}"'
        row = Row(record_id, stamp, etag, fields)  # type: ignore[arg-type]
        self.rows[record_id] = row
        self.log.append(
            RecordChanged(
                side=self.side,
                table=MAPPING.table(self.side),
                record_id=record_id,
                op="upsert",
                modified_at=stamp,
                captured_at=stamp,
                fields=dict(row.fields),
                etag=etag,
            )
        )
        return row


class SyncModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sides: dict[Side, SideModel] = {
            "bc": SideModel("bc"),
            "dataverse": SideModel("dataverse"),
        }
        self.couplings: dict[str, Coupling] = {}  # by bc id
        self.delivered: dict[Side, int] = {"bc": 0, "dataverse": 0}
        self.numbers = 0
        self.ids = 0

    def new_id(self) -> str:
        # Deterministic, so hypothesis replays a failing case exactly.
        self.ids += 1
        return str(uuid.UUID(int=self.ids))

    @initialize()
    def start(self) -> None:
        self.sides["bc"].write(
            self.new_id(), {"number": "C1", "displayName": "Adatum", "city": "Atlanta"}
        )

    # users

    @rule(name=NAMES, city=CITIES)
    def user_creates_bc_customer(self, name: str, city: str) -> None:
        self.numbers += 1
        self.sides["bc"].write(
            self.new_id(), {"number": f"N{self.numbers}", "displayName": name, "city": city}
        )

    @rule(name=NAMES, city=CITIES)
    def user_creates_dataverse_account(self, name: str, city: str) -> None:
        self.numbers += 1
        self.sides["dataverse"].write(
            self.new_id(),
            {"accountnumber": f"A{self.numbers}", "name": name, "address1_city": city},
        )

    @rule(data=st.data(), side=st.sampled_from(["bc", "dataverse"]), city=CITIES)
    def user_edits(self, data: st.DataObject, side: Side, city: str) -> None:
        rows = sorted(self.sides[side].rows)
        if rows:
            rid = data.draw(st.sampled_from(rows))
            self.sides[side].write(rid, {"city" if side == "bc" else "address1_city": city})

    # the pipeline

    @rule(side=st.sampled_from(["bc", "dataverse"]))
    def deliver_next(self, side: Side) -> None:
        log = self.sides[side].log
        if self.delivered[side] < len(log):
            self.apply(log[self.delivered[side]])
            self.delivered[side] += 1

    @rule(data=st.data(), side=st.sampled_from(["bc", "dataverse"]))
    def redeliver_an_old_event(self, data: st.DataObject, side: Side) -> None:
        done = self.delivered[side]
        if done:
            self.apply(self.sides[side].log[data.draw(st.integers(0, done - 1))])

    @rule()
    def drain(self) -> None:
        self._drain()

    def _drain(self) -> None:
        for _ in range(10_000):
            progressed = False
            for side in ("bc", "dataverse"):
                log = self.sides[side].log
                if self.delivered[side] < len(log):
                    self.apply(log[self.delivered[side]])
                    self.delivered[side] += 1
                    progressed = True
            if not progressed:
                return
        raise AssertionError("events keep coming: a change echoes back and forth")

    # the rules, performed the way apply performs them

    def coupling_of(self, side: Side, record_id: str) -> Coupling | None:
        if side == "bc":
            return self.couplings.get(record_id)
        return next((c for c in self.couplings.values() if c.dv_id == record_id), None)

    def apply(self, event: RecordChanged) -> None:
        coupling = self.coupling_of(event.side, event.record_id)
        t = triage(event, MAPPING, JOB, coupling)
        direction = "to_integration" if event.side == "bc" else "from_integration"
        if isinstance(t, Ignore | Pending):
            return
        if isinstance(t, Unchanged):
            return
        dest = self.sides[other_side(event.side)]
        if isinstance(t, FetchDestination):
            row = dest.rows[t.record_id]
            mapped = map_values(MAPPING, direction, event.fields, {}, MAPPINGS, creating=False)
            d = decide_coupled(event, MAPPING, t.coupling, row, mapped)
        else:
            assert isinstance(t, FetchCandidates)
            mapped = map_values(MAPPING, direction, event.fields, {}, MAPPINGS, creating=True)
            key = MAPPING.match[0]
            mine = event.fields.get(key.bc if event.side == "bc" else key.dataverse)
            theirs = key.dataverse if event.side == "bc" else key.bc
            candidates = [
                r
                for r in dest.rows.values()
                if r.fields.get(theirs) == mine and self.coupling_of(dest.side, r.id) is None
            ]
            d = decide_uncoupled(event, MAPPING, mapped, candidates)
        self.perform(event, d)

    def perform(self, event: RecordChanged, d: object) -> None:
        source_stamp = Stamp(event.modified_at, event.etag)
        match d:
            case Unchanged(coupling=c) if c is not None:
                self.couplings[c.bc_id] = c
            case Update(side=side, record_id=rid, payload=payload, coupling=c):
                row = self.sides[side].write(rid, payload)
                self.couplings[c.bc_id] = c.with_stamp(side, Stamp(row.modified_at, row.etag))
            case Create(side=side, payload=payload, record_id=rid, matched=matched):
                target = rid or self.new_id()
                if matched is not None and not payload:
                    row = matched
                else:
                    row = self.sides[side].write(target, payload)
                ids = {event.side: event.record_id, side: row.id}
                stamps = {event.side: source_stamp, side: Stamp(row.modified_at, row.etag)}
                c = Coupling.between("CUSTOMER", ids, stamps, None)
                self.couplings[c.bc_id] = c
            case Skip() | Unchanged():
                pass
            case _:
                raise AssertionError(f"unexpected decision {d!r}")

    # what must always hold

    @invariant()
    def one_counterpart_each(self) -> None:
        dv_ids = [c.dv_id for c in self.couplings.values()]
        assert len(dv_ids) == len(set(dv_ids))
        numbers = [r.fields.get("accountnumber") for r in self.sides["dataverse"].rows.values()]
        assert len(numbers) == len(set(numbers)), "a record was created twice"

    @invariant()
    def replaying_everything_changes_nothing_after_a_drain(self) -> None:
        if any(self.delivered[s] < len(self.sides[s].log) for s in ("bc", "dataverse")):
            return
        before = {s: (len(m.log), dict(m.rows)) for s, m in self.sides.items()}
        for side in ("bc", "dataverse"):
            for e in list(self.sides[side].log):
                self.apply(e)
        after = {s: (len(m.log), dict(m.rows)) for s, m in self.sides.items()}
        assert before == after, "a replayed event wrote again"

    def teardown(self) -> None:
        self._drain()
        bc, dv = self.sides["bc"], self.sides["dataverse"]
        assert len(self.couplings) == len(bc.rows) == len(dv.rows), "a record did not sync"
        for c in self.couplings.values():
            b, a = bc.rows[c.bc_id], dv.rows[c.dv_id]
            m = map_values(MAPPING, "to_integration", b.fields, {}, MAPPINGS, creating=False)
            assert changes(m, "dataverse", a.fields) == {}, f"{b.fields} vs {a.fields}"


TestSyncModel = SyncModel.TestCase
TestSyncModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
