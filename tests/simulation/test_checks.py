"""The simulator's verdicts can fail: each invariant check, shown a world that
breaks it, names the break; and a schedule replays exactly."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import pytest

from tablesync.adapters.memory import memory_stores
from tablesync.core.counting import continuous_job_id
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import BatchEffects
from tablesync.core.events import Direction, RecordChanged, Side
from tablesync.core.records import Row
from tablesync.emulators.memory import MemorySide
from tablesync.ports.state import StateStores
from tests.simulation.checks import Changes, check
from tests.simulation.runner import run_schedule
from tests.simulation.users import Record, Truth, UserSide
from tests.simulation.world import _document

BC_TOPIC, DV_TOPIC = "sim.cdc.bc.customers", "sim.cdc.dataverse.accounts"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


@dataclass
class _World:
    """Both sides, the state database, and the log's change events: a
    record the users created on BC, which tablesync created on Dataverse
    (counted inserted) and whose echo it found unchanged."""

    sides: dict[Side, MemorySide]
    stores: StateStores
    changes: dict[tuple[str, int], list[RecordChanged]]

    async def count(self, direction: Direction, topic: str, *names: str) -> None:
        job_id = continuous_job_id("CUSTOMER", direction, T0)
        await self.stores.jobs.continuous_job(job_id, "CUSTOMER", direction, T0)
        effects = BatchEffects("CUSTOMER")
        effects.count(job_id, topic, 0, *names)
        await self.stores.apply_state.commit(effects)

    def publish(
        self, topic: str, side: Side, row: Row, op: Literal["upsert", "delete"] = "upsert"
    ) -> None:
        event = RecordChanged(side, "", row.id, op, T0, T0, dict(row.fields))
        self.changes.setdefault((topic, 0), []).append(event)


async def _world(bc_name: str, dv_name: str, *, coupled: bool = True) -> _World:
    clock = _Clock()
    stores = memory_stores(clock=clock)
    await stores.mappings.replace_all(_document())
    sides = {"bc": MemorySide("bc", clock), "dataverse": MemorySide("dataverse", clock)}
    bc = sides["bc"].user_create(
        "customers",
        {
            "number": "S-1",
            "displayName": bc_name,
            "city": "Oslo",
            "phoneNumber": "0",
            "blocked": " ",
        },
    )
    dv = sides["dataverse"].user_create(
        "accounts",
        {
            "accountnumber": "S-1",
            "name": dv_name,
            "address1_city": "Oslo",
            "telephone1": "0",
            "statecode": 0,
            "customertypecode": 3,
        },
    )
    if coupled:
        empty = Stamp(None, None)
        await stores.couplings.couple(Coupling("CUSTOMER", bc.id, dv.id, "S-1", empty, empty), None)
    w = _World(sides, stores, {})
    w.publish(BC_TOPIC, "bc", bc)
    w.publish(DV_TOPIC, "dataverse", dv)
    await w.count("to_integration", BC_TOPIC, "inserted")
    await w.count("from_integration", DV_TOPIC, "unchanged")
    return w


def _truth(last_name: str, *, home: Side | None = "dataverse") -> Truth:
    record = Record("S-1", "bc", home)
    record.last = {"name": last_name, "city": "Oslo", "phone": "0"}
    record.written = {"name": {"A", last_name}, "city": {"Oslo"}, "phone": {"0"}}
    truth = Truth({"S-1": record})
    truth.ledger.created["bc"] = 1
    return truth


async def _verdict(truth: Truth, w: _World) -> list[str]:
    user_sides: dict[Side, UserSide] = dict(w.sides)  # type: ignore[arg-type]
    changes: Changes = w.changes
    return await check(truth, user_sides, w.stores, lambda: [], changes)


async def test_a_world_that_holds_every_invariant_passes() -> None:
    w = await _world("B", "B")
    assert await _verdict(_truth("B"), w) == []


async def test_an_edit_overwritten_by_an_older_value_is_a_lost_edit() -> None:
    w = await _world("A", "A")
    found = await _verdict(_truth("B"), w)
    assert any(v.startswith("lost edit: S-1.name") for v in found), found


async def test_sides_that_differ_and_records_not_coupled_are_named() -> None:
    w = await _world("A", "B", coupled=False)
    found = await _verdict(_truth("B", home=None), w)
    assert any("not coupled" in v for v in found), found
    assert any("sides differ" in v for v in found), found


async def test_a_second_record_is_a_duplicate_and_a_deleted_one_that_stays_is_named() -> None:
    w = await _world("B", "B")
    w.sides["bc"].user_create("customers", {"number": "s-1", "displayName": "B", "blocked": " "})
    truth = _truth("B")
    truth.records["S-1"].deleted = True
    found = await _verdict(truth, w)
    assert any(v.startswith("duplicate: 2 records s-1 on bc") for v in found), found
    assert any(v.startswith("deleted S-1 still exists") for v in found), found


async def test_an_event_counted_twice_or_never_is_named_on_its_partition() -> None:
    w = await _world("B", "B")
    # The echo applied again in a second try of its batch, counted again.
    await w.count("from_integration", DV_TOPIC, "unchanged")
    found = await _verdict(_truth("B"), w)
    assert found == [
        f"counters: CUSTOMER {DV_TOPIC}[0]: 2 outcomes counted for 1 changes in scope"
        " (events counted more than once)",
        f"counters: CUSTOMER {DV_TOPIC}[0]: more outcomes than events",
    ]
    w = await _world("B", "B")
    w.publish(BC_TOPIC, "bc", w.sides["bc"].rows("customers")[0])
    found = await _verdict(_truth("B"), w)
    assert found == [f"counters: CUSTOMER {BC_TOPIC}[0]: 2 changes in scope, only 1 counted"]


async def test_an_event_out_of_the_filter_or_a_deletion_is_no_change_to_count() -> None:
    w = await _world("B", "B")
    blocked = replace(w.sides["bc"].rows("customers")[0], fields={"blocked": "All"})
    w.publish(BC_TOPIC, "bc", blocked)
    w.publish(BC_TOPIC, "bc", blocked, op="delete")
    assert await _verdict(_truth("B"), w) == []


async def test_rows_that_do_not_add_up_with_the_counters_are_named() -> None:
    w = await _world("B", "B")
    # An insert counted twice by a batch that was applied twice.
    await w.count("to_integration", "(retry)", "inserted")
    found = await _verdict(_truth("B"), w)
    assert found == [
        "counters: dataverse: 1 rows, but 0 before + 0 created by the users"
        " + 2 inserted by CUSTOMER to_integration - 0 deleted by it"
        " - 0 deleted by the users = 2"
    ]


async def test_a_deletion_no_user_asked_for_is_named() -> None:
    w = await _world("B", "B")
    dv = w.sides["dataverse"].rows("accounts")[0]
    w.sides["dataverse"].user_delete("accounts", dv.id)
    truth = _truth("B")
    truth.ledger.deleted["dataverse"] = 1
    # Its deletion propagated to BC: counted there, though no BC row was deleted.
    await w.count("from_integration", "(retry)", "deleted")
    found = await _verdict(truth, w)
    assert (
        "counters: bc: 1 rows, but 0 before + 1 created by the users"
        " + 0 inserted by CUSTOMER from_integration - 1 deleted by it"
        " - 0 deleted by the users = 0"
    ) in found, found
    await w.count("from_integration", "(retry)", "deleted")
    found = await _verdict(truth, w)
    assert (
        "counters: bc: 2 deleted by CUSTOMER from_integration,"
        " but the users deleted only 1 on dataverse"
    ) in found, found


@pytest.mark.parametrize(("profile", "seed"), [("faults", 300340), ("instances", 200882)])
def test_a_schedule_replays_exactly_even_after_another(profile: str, seed: int) -> None:
    first = run_schedule(seed, profile=profile, verbose=True)
    run_schedule(seed + 1, profile=profile)
    again = run_schedule(seed, profile=profile, verbose=True)
    assert [str(s) for s in again.trace] == [str(s) for s in first.trace]
    assert again.violations == first.violations
