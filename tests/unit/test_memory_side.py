"""What ``MemorySide`` offers a simulator beyond ``SideApi`` (whose behaviour
``tests/contract`` holds to the real connector): users' writes, faults, the pause hook,
determinism, and its speed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from tablesync.core.events import Side
from tablesync.core.filters import Compare, Op
from tablesync.core.records import Create, Delete, Rejected, Update, WriteOp, Written
from tablesync.emulators.memory import MemorySide
from tablesync.errors import ApiUnavailable, RecordRejected
from tests.contract.conftest import StepClock

SINCE = datetime(2000, 1, 1, tzinfo=UTC)


class Recording(MemorySide):
    """Notes every scheduling point it passes."""

    def __init__(self, side: Side) -> None:
        super().__init__(side, StepClock(), page_size=2)
        self.points: list[str] = []

    async def _pause(self, what: str) -> None:
        self.points.append(what)
        await asyncio.sleep(0)


def side(name: Side = "bc") -> MemorySide:
    return MemorySide(name, StepClock(), page_size=2)


def created(result: object) -> str:
    assert isinstance(result, Written) and result.row is not None, result
    return result.row.id


# ---------------------------------------------------------------- users


def test_users_create_update_and_delete_with_the_apis_rules() -> None:
    bc = side()

    row = bc.user_create("customers", {"displayName": "Ada"})
    changed = bc.user_update("customers", row.id, {"city": "Oslo"})
    bc.user_delete("customers", row.id)

    assert bc.integration_user is None
    assert row.fields["number"] == "C00001"
    assert changed.fields["city"] == "Oslo" and changed.etag != row.etag
    assert bc.rows("customers") == []
    with pytest.raises(RecordRejected) as refused:
        bc.user_create("customers", {"displayName": "x", "salespersonCode": "NOPE"})
    assert refused.value.status == 400 and "Salesperson Code" in refused.value.detail
    with pytest.raises(RecordRejected) as gone:
        bc.user_update("customers", row.id, {"city": "x"})
    assert gone.value.status == 404


def test_dataverse_users_write_as_themselves() -> None:
    dataverse = side("dataverse")
    user = dataverse.user_create("systemusers", {"firstname": "Grace", "lastname": "Hopper"})

    account = dataverse.user_create("accounts", {"name": "Contoso"}, as_user=user.id)
    by_service = dataverse.user_update("accounts", account.id, {"name": "Contoso Ltd"})

    assert user.fields["fullname"] == "Grace Hopper"
    assert account.modified_by == user.id == account.fields["_ownerid_value"]
    assert by_service.modified_by == dataverse.integration_user
    assert by_service.fields["_ownerid_value"] == user.id


async def test_rows_and_reads_agree() -> None:
    dataverse = side("dataverse")
    ids = [dataverse.user_create("accounts", {"name": f"a{i}"}).id for i in range(3)]

    read = [r async for page in dataverse.read_all("accounts") for r in page]

    assert dataverse.rows("accounts") == read
    assert [r.id for r in read] == sorted(ids)
    assert dataverse.row("accounts", ids[0].upper()) == next(r for r in read if r.id == ids[0])


@pytest.mark.parametrize(
    ("name", "table", "values"),
    [
        ("bc", "customers", {"displayName": "Ada"}),
        ("dataverse", "accounts", {"name": "Ada"}),
    ],
)
async def test_a_copy_keeps_the_rows_stamps_and_etags_it_was_given(
    name: Side, table: str, values: dict[str, str]
) -> None:
    original = side(name)
    for _ in range(3):
        original.user_create(table, values)
    read = [r async for page in original.read_all(table) for r in page]

    copy = MemorySide(name, StepClock(), ids=lambda: "5e0c9a5c-2f7d-4a1b-9e3f-0b8c7d6e5f4a")
    copy.load(table, read)
    # The ETag a coupling holds for the original compares equal on the copy.
    assert copy.rows(table) == read
    target = read[0]
    results = await copy.write(table, [Update(target.id, {}, etag=target.etag)])
    fresh = copy.user_create(table, values)

    assert isinstance(results[0], Written), "the original's ETag is the copy's version"
    assert fresh.etag not in {r.etag for r in read}


# ---------------------------------------------------------------- faults


async def test_an_outage_fails_the_next_matching_calls_only() -> None:
    bc = side()
    bc.user_create("customers", {"displayName": "Ada"})
    bc.faults.fail(2, method="read_all", table="customers")

    with pytest.raises(ApiUnavailable):
        [p async for p in bc.read_all("customers")]
    ids = [p async for p in bc.read_ids("customers")]
    with pytest.raises(ApiUnavailable) as raised:
        await anext(bc.read_all("customers"))
    after = [p async for p in bc.read_all("customers")]

    assert raised.value.status == 503 and raised.value.side == "bc"
    assert len(ids) == 1 and len(after) == 1
    assert bc.stats.unavailable == 2


async def test_an_outage_can_cut_a_read_between_pages() -> None:
    bc = side()
    for i in range(5):
        bc.user_create("customers", {"displayName": f"c{i}"})
    pages = bc.changed_since("customers", SINCE)
    first = await anext(pages)
    bc.faults.fail()

    with pytest.raises(ApiUnavailable):
        await anext(pages)
    assert len(first) == 2


async def test_a_write_outage_applies_nothing_some_or_all_ops() -> None:
    bc = side()
    ops: list[WriteOp] = [Create({"displayName": f"c{i}"}) for i in range(3)]

    for applied, expected in ((False, 0), (1, 1), (True, 3)):
        bc.faults.fail(applied=applied)
        with pytest.raises(ApiUnavailable) as raised:
            await bc.write("customers", ops)
        assert len(bc.rows("customers")) == expected, applied
        assert ("may have applied" in str(raised.value)) == (applied is not False)
        for row in bc.rows("customers"):
            bc.user_delete("customers", row.id)


async def test_a_refused_record_leaves_the_rest_of_the_write() -> None:
    dataverse = side("dataverse")
    keep = dataverse.user_create("accounts", {"name": "keep"})
    target = dataverse.user_create("accounts", {"name": "target"})
    dataverse.faults.refuse("accounts", record_id=target.id.upper(), status=403, message="no")
    dataverse.faults.refuse(where=lambda op: isinstance(op, Create) and op.values["name"] == "b")

    results = await dataverse.write(
        "accounts",
        [
            Update(target.id, {"name": "x"}),
            Update(keep.id, {"name": "kept"}),
            Create({"name": "a"}),
            Create({"name": "b"}),
            Update(target.id, {"name": "y"}),
        ],
    )

    assert results[0] == Rejected(403, "no")
    assert isinstance(results[1], Written) and isinstance(results[2], Written)
    assert isinstance(results[3], Rejected) and results[3].status == 400
    assert isinstance(results[4], Written)
    assert not dataverse.faults.active


async def test_throttling_is_more_pauses_and_nothing_else() -> None:
    bc = Recording("bc")
    bc.user_create("customers", {"displayName": "Ada"})
    bc.faults.throttle(1, method="get_many", waits=3)

    found = await bc.get_many("customers", [bc.rows("customers")[0].id])
    again = await bc.get_many("customers", list(found))

    assert found == again
    assert bc.points.count("bc.get_many customers throttled") == 3
    assert bc.stats.throttled == 3


async def test_every_call_passes_the_pause_hook() -> None:
    bc = Recording("bc")
    [result] = await bc.write("customers", [Create({"displayName": "Ada"})])
    record_id = created(result)
    for i in range(3):
        bc.user_create("customers", {"displayName": f"c{i}"})

    [p async for p in bc.changed_since("customers", SINCE)]
    [p async for p in bc.read_all("customers")]
    [p async for p in bc.read_ids("customers")]
    await bc.get_many("customers", [record_id])
    await bc.find("customers", Compare("displayName", Op.EQ, "Ada"))
    await bc.find("customers", Compare("displayName", Op.EQ, "Ada"), top=1)
    await bc.write("customers", [Delete(record_id)])

    assert bc.points == [
        "bc.write customers",
        "bc.write customers applied",
        *["bc.changed_since customers"] * 2,
        *["bc.read_all customers"] * 2,
        *["bc.read_ids customers"] * 2,
        "bc.get_many customers",
        "bc.find customers",
        "bc.find customers",
        "bc.write customers",
        "bc.write customers applied",
    ]


# ---------------------------------------------------------------- determinism and speed


async def run_schedule(name: Side) -> list[tuple[str, str | None, object]]:
    api = side(name)
    table = "customers" if name == "bc" else "accounts"
    label = "displayName" if name == "bc" else "name"
    results = await api.write(table, [Create({label: f"r{i}"}) for i in range(4)])
    ids = [created(r) for r in results]
    await api.write(table, [Update(ids[1], {label: "x"}), Delete(ids[2])])
    return [(r.id, r.etag, r.fields[label]) for r in api.rows(table)]


@pytest.mark.parametrize("name", ["bc", "dataverse"])
async def test_the_same_schedule_gives_the_same_rows(name: Side) -> None:
    assert await run_schedule(name) == await run_schedule(name)


async def test_round_trips_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    for name, table, label in (
        ("bc", "customers", "displayName"),
        ("dataverse", "accounts", "name"),
    ):
        api = MemorySide(name, StepClock())  # type: ignore[arg-type]
        count = 2000
        started = time.perf_counter()
        for i in range(count):
            [result] = await api.write(table, [Create({label: f"n{i}"})])
            record_id = created(result)
            await api.write(table, [Update(record_id, {label: f"m{i}"})])
            await api.get_many(table, [record_id])
        elapsed = time.perf_counter() - started
        with capsys.disabled():
            print(f"\nMemorySide {name}: {count / elapsed:,.0f} create+update+read round trips/s")
        assert len(api.rows(table)) == count
