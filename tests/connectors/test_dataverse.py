"""The Dataverse connector against the Dataverse emulator, over real sockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tablesync.adapters.odata import DataverseApi
from tablesync.core.filters import And, Call, Compare, Func, Op
from tablesync.core.records import (
    Create,
    Delete,
    Missing,
    Ref,
    Rejected,
    Row,
    Stale,
    Update,
    WriteOp,
    Written,
)
from tests.connectors.conftest import ApiFactory

pytestmark = pytest.mark.integration

SINCE_START = datetime.now(UTC) - timedelta(minutes=5)


def tagged(tag: str) -> Call:
    return Call(Func.STARTSWITH, "name", tag)


async def create_accounts(api: DataverseApi, tag: str, count: int) -> list[Row]:
    results = await api.write(
        "accounts", [Create({"name": f"{tag}-{i:03d}"}) for i in range(count)]
    )
    rows = [r.row for r in results if isinstance(r, Written) and r.row is not None]
    assert len(rows) == count, results
    return rows


async def test_rows_come_back_in_the_contract_shape(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    [row] = await create_accounts(api, tag, 1)

    assert row.id == row.id.lower()
    assert row.fields["accountid"] == row.id
    assert row.fields["name"] == f"{tag}-000"
    assert row.modified_at.tzinfo is not None
    assert row.etag is not None and row.etag.startswith('W/"')
    assert row.modified_by == row.fields["_modifiedby_value"]
    assert not any("@" in name for name in row.fields)


async def test_changed_since_pages_in_stamp_then_id_order(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse", page_size=7)
    created = await create_accounts(api, tag, 25)

    pages = [page async for page in api.changed_since("accounts", SINCE_START, filter=tagged(tag))]

    assert [len(p) for p in pages] == [7, 7, 7, 4]
    rows = [row for page in pages for row in page]
    assert {r.id for r in rows} == {r.id for r in created}
    assert [(r.modified_at, r.id) for r in rows] == sorted((r.modified_at, r.id) for r in rows)


async def test_changed_since_excludes_older_rows(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    await create_accounts(api, tag, 3)

    later = datetime.now(UTC) + timedelta(hours=1)
    pages = [p async for p in api.changed_since("accounts", later, filter=tagged(tag))]

    assert pages == []


async def test_rows_modified_while_paging_are_never_lost(connect: ApiFactory, tag: str) -> None:
    reader: DataverseApi = await connect("dataverse", page_size=5)
    writer: DataverseApi = await connect("dataverse")
    created = await create_accounts(writer, tag, 30)
    seen: list[str] = []

    async for page in reader.changed_since("accounts", SINCE_START, filter=tagged(tag)):
        if not seen:
            # Touch rows already read and rows not read yet: both move behind the cursor.
            touched = [page[0].id, page[2].id, created[-1].id, created[17].id]
            results = await writer.write(
                "accounts", [Update(i, {"description": "touched"}) for i in touched]
            )
            assert all(isinstance(r, Written) for r in results)
        seen.extend(row.id for row in page)

    assert set(seen) == {r.id for r in created}
    assert seen.count(created[-1].id) == 1
    assert len(seen) >= 30


async def test_read_all_and_read_ids_are_ordered_by_id(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse", page_size=4)
    created = await create_accounts(api, tag, 10)

    rows = [r async for page in api.read_all("accounts", filter=tagged(tag)) for r in page]
    ids = [i async for page in api.read_ids("accounts") for i in page]

    assert [r.id for r in rows] == sorted(r.id for r in created)
    assert ids == sorted(ids)
    assert {r.id for r in created} <= set(ids)


async def test_filters_are_pushed_down(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    await create_accounts(api, tag, 12)
    before = api.stats.rows_read

    found = await api.find("accounts", And(tagged(tag), Compare("name", Op.EQ, f"{tag}-007")))
    top = await api.find("accounts", tagged(tag), top=5)

    assert [r.fields["name"] for r in found] == [f"{tag}-007"]
    assert len(top) == 5
    # Only matching rows crossed the wire.
    assert api.stats.rows_read - before == 6


async def test_get_many_chunks_ids_across_requests(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse", batch_size=100)
    created = await create_accounts(api, tag, 230)
    absent = [str(uuid.uuid4()) for _ in range(5)]

    found = await api.get_many("accounts", [r.id.upper() for r in created] + absent + ["nope"])

    assert set(found) == {r.id for r in created}
    assert found[created[0].id].fields["name"] == f"{tag}-000"
    assert await api.get_many("accounts", []) == {}


async def test_upsert_by_id_twice_makes_one_record(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    record_id = str(uuid.uuid4())

    first = await api.write("accounts", [Create({"name": f"{tag}-a"}, record_id=record_id)])
    again = await api.write("accounts", [Create({"name": f"{tag}-b"}, record_id=record_id)])

    assert isinstance(first[0], Written) and first[0].row is not None
    assert isinstance(again[0], Written) and again[0].row is not None
    assert first[0].row.id == again[0].row.id == record_id
    assert again[0].row.fields["name"] == f"{tag}-b"
    assert again[0].row.fields["createdon"] == first[0].row.fields["createdon"]
    assert len(await api.find("accounts", tagged(tag))) == 1


async def test_one_refused_record_leaves_the_rest_of_the_batch_written(
    connect: ApiFactory, tag: str
) -> None:
    api: DataverseApi = await connect("dataverse")
    ops: list[WriteOp] = [Create({"name": f"{tag}-{i}"}) for i in range(5)]
    ops[2] = Create({"name": f"{tag}-" + "x" * 200})

    results = await api.write("accounts", ops)

    assert [type(r).__name__ for r in results] == ["Written"] * 2 + ["Rejected"] + ["Written"] * 2
    refused = results[2]
    assert isinstance(refused, Rejected) and refused.status == 400
    assert "name" in refused.message
    assert len(await api.find("accounts", tagged(tag))) == 4
    assert api.stats.records_refused == 1


async def test_results_follow_op_order_across_batches(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse", batch_size=3)
    ops: list[WriteOp] = [Create({"name": f"{tag}-{i:02d}"}) for i in range(10)]

    results = await api.write("accounts", ops)

    names = [r.row.fields["name"] for r in results if isinstance(r, Written) and r.row]
    assert names == [f"{tag}-{i:02d}" for i in range(10)]


async def test_stale_etag_is_stale_for_update_and_delete(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    [row] = await create_accounts(api, tag, 1)
    [fresh] = await api.write("accounts", [Update(row.id, {"description": "1"}, etag=row.etag)])
    assert isinstance(fresh, Written) and fresh.row is not None
    assert fresh.row.etag != row.etag

    stale = await api.write(
        "accounts",
        [Update(row.id, {"description": "2"}, etag=row.etag), Delete(row.id, etag=row.etag)],
    )

    assert [type(r) for r in stale] == [Stale, Stale]
    [current] = (await api.get_many("accounts", [row.id])).values()
    assert current.fields["description"] == "1"


async def test_update_and_delete_of_a_missing_row_are_missing(connect: ApiFactory) -> None:
    api: DataverseApi = await connect("dataverse")
    absent = str(uuid.uuid4())

    results = await api.write("accounts", [Update(absent, {"name": "x"}), Delete(absent)])

    assert [type(r) for r in results] == [Missing, Missing]
    # If-Match: * keeps an update from creating the row.
    assert await api.get_many("accounts", [absent]) == {}


async def test_delete_then_read(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    rows = await create_accounts(api, tag, 2)

    results = await api.write("accounts", [Delete(rows[0].id, etag=rows[0].etag)])

    assert results == [Written(None)]
    assert set(await api.get_many("accounts", [r.id for r in rows])) == {rows[1].id}


async def test_lookup_is_bound_and_cleared(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")
    [account] = await create_accounts(api, tag, 1)
    contact_id = str(uuid.uuid4())

    [bound] = await api.write(
        "contacts",
        [
            Create(
                {
                    "lastname": tag,
                    "parentcustomerid_account@odata.bind": Ref("accounts", account.id),
                },
                record_id=contact_id,
            )
        ],
    )
    [cleared] = await api.write(
        "contacts", [Update(contact_id, {"parentcustomerid_account@odata.bind": None})]
    )

    assert isinstance(bound, Written) and bound.row is not None
    assert bound.row.fields["_parentcustomerid_value"] == account.id
    assert isinstance(cleared, Written) and cleared.row is not None
    assert cleared.row.fields["_parentcustomerid_value"] is None


async def test_a_bind_to_a_missing_row_is_rejected(connect: ApiFactory, tag: str) -> None:
    api: DataverseApi = await connect("dataverse")

    [result] = await api.write(
        "contacts",
        [Create({"lastname": tag, "parentcustomerid_account": Ref("accounts", str(uuid.uuid4()))})],
    )

    assert isinstance(result, Rejected)
    assert 400 <= result.status < 500
