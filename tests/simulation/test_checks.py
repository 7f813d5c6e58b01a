"""The simulator's verdicts can fail: each invariant check, shown a world that
breaks it, names the break; and a schedule replays exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tablesync.adapters.memory import memory_stores
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Side
from tablesync.emulators.memory import MemorySide
from tests.simulation.checks import check
from tests.simulation.runner import run_schedule
from tests.simulation.users import Record, Truth, UserSide
from tests.simulation.world import _document


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


async def _world(
    bc_name: str, dv_name: str, *, coupled: bool = True
) -> tuple[dict[Side, MemorySide], object]:
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
    return sides, stores


def _truth(last_name: str, *, home: Side | None = "dataverse") -> Truth:
    record = Record("S-1", "bc", home)
    record.last = {"name": last_name, "city": "Oslo", "phone": "0"}
    record.written = {"name": {"A", last_name}, "city": {"Oslo"}, "phone": {"0"}}
    return Truth({"S-1": record})


async def _verdict(truth: Truth, sides: dict[Side, MemorySide], stores: object) -> list[str]:
    user_sides: dict[Side, UserSide] = dict(sides)  # type: ignore[arg-type]
    return await check(truth, user_sides, stores, lambda: [])  # type: ignore[arg-type]


async def test_a_world_that_holds_every_invariant_passes() -> None:
    sides, stores = await _world("B", "B")
    assert await _verdict(_truth("B"), sides, stores) == []


async def test_an_edit_overwritten_by_an_older_value_is_a_lost_edit() -> None:
    sides, stores = await _world("A", "A")
    found = await _verdict(_truth("B"), sides, stores)
    assert any(v.startswith("lost edit: S-1.name") for v in found), found


async def test_sides_that_differ_and_records_not_coupled_are_named() -> None:
    sides, stores = await _world("A", "B", coupled=False)
    found = await _verdict(_truth("B", home=None), sides, stores)
    assert any("not coupled" in v for v in found), found
    assert any("sides differ" in v for v in found), found


async def test_a_second_record_is_a_duplicate_and_a_deleted_one_that_stays_is_named() -> None:
    sides, stores = await _world("B", "B")
    sides["bc"].user_create("customers", {"number": "s-1", "displayName": "B", "blocked": " "})
    truth = _truth("B")
    truth.records["S-1"].deleted = True
    found = await _verdict(truth, sides, stores)
    assert any(v.startswith("duplicate: 2 records s-1 on bc") for v in found), found
    assert any(v.startswith("deleted S-1 still exists") for v in found), found


@pytest.mark.parametrize(("profile", "seed"), [("faults", 300340), ("instances", 200882)])
def test_a_schedule_replays_exactly_even_after_another(profile: str, seed: int) -> None:
    first = run_schedule(seed, profile=profile, verbose=True)
    run_schedule(seed + 1, profile=profile)
    again = run_schedule(seed, profile=profile, verbose=True)
    assert [str(s) for s in again.trace] == [str(s) for s in first.trace]
    assert again.violations == first.violations
