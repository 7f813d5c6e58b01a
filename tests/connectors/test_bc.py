"""The Business Central connector against the BC emulator, over real sockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tablesync.adapters.odata import BcApi, open_api
from tablesync.core.filters import Call, Func
from tablesync.core.records import (
    Create,
    Delete,
    Missing,
    Rejected,
    Row,
    Stale,
    Update,
    WriteOp,
    Written,
)
from tablesync.errors import ApiError
from tests.connectors.conftest import ApiFactory, Emulators

pytestmark = pytest.mark.integration

SINCE_START = datetime.now(UTC) - timedelta(minutes=5)


def tagged(tag: str) -> Call:
    return Call(Func.STARTSWITH, "displayName", tag)


async def create_customers(api: BcApi, tag: str, count: int) -> list[Row]:
    results = await api.write(
        "customers", [Create({"displayName": f"{tag}-{i:03d}"}) for i in range(count)]
    )
    rows = [r.row for r in results if isinstance(r, Written) and r.row is not None]
    assert len(rows) == count, results
    return rows


async def test_company_is_found_by_name(emulators: Emulators) -> None:
    first = await open_api("bc", emulators.settings("bc"))
    named = await open_api("bc", emulators.settings("bc", company_name="CRONUS USA, Inc."))
    try:
        assert isinstance(first, BcApi) and isinstance(named, BcApi)
        assert await first.company_id() == await named.company_id()
    finally:
        await first.aclose()
        await named.aclose()


async def test_an_unknown_company_fails_when_opening(emulators: Emulators) -> None:
    with pytest.raises(ApiError, match="no company named 'Nowhere Ltd'"):
        await open_api("bc", emulators.settings("bc", company_name="Nowhere Ltd"))


async def test_rows_come_back_in_the_contract_shape(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")
    [row] = await create_customers(api, tag, 1)

    assert row.id == row.id.lower()
    assert row.fields["displayName"] == f"{tag}-000"
    assert row.fields["number"]  # filled by the number series
    assert row.modified_at.tzinfo is not None
    assert row.etag is not None
    assert row.modified_by is None


async def test_changed_since_pages_across_boundaries(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc", page_size=6)
    created = await create_customers(api, tag, 20)

    pages = [page async for page in api.changed_since("customers", SINCE_START, filter=tagged(tag))]

    assert [len(p) for p in pages] == [6, 6, 6, 2]
    rows = [row for page in pages for row in page]
    assert {r.id for r in rows} == {r.id for r in created}
    assert [(r.modified_at, r.id) for r in rows] == sorted((r.modified_at, r.id) for r in rows)


async def test_rows_modified_while_paging_are_never_lost(connect: ApiFactory, tag: str) -> None:
    reader: BcApi = await connect("bc", page_size=4)
    writer: BcApi = await connect("bc")
    created = await create_customers(writer, tag, 18)
    seen: list[str] = []

    async for page in reader.changed_since("customers", SINCE_START, filter=tagged(tag)):
        if not seen:
            touched = [page[1].id, created[-1].id, created[9].id]
            results = await writer.write(
                "customers", [Update(i, {"phoneNumber": "555"}) for i in touched]
            )
            assert all(isinstance(r, Written) for r in results)
        seen.extend(row.id for row in page)

    assert set(seen) == {r.id for r in created}


async def test_read_all_ids_and_find(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc", page_size=3)
    created = await create_customers(api, tag, 7)

    rows = [r async for page in api.read_all("customers", filter=tagged(tag)) for r in page]
    ids = [i async for page in api.read_ids("customers") for i in page]
    top = await api.find("customers", tagged(tag), top=2)

    assert [r.id for r in rows] == sorted(r.id for r in created)
    assert {r.id for r in created} <= set(ids)
    assert ids == sorted(ids)
    assert len(top) == 2


async def test_get_many_chunks_ids(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")
    created = await create_customers(api, tag, 150)

    found = await api.get_many("customers", [r.id for r in created] + [str(uuid.uuid4())])

    assert set(found) == {r.id for r in created}


async def test_one_refused_record_leaves_the_rest_of_the_batch_written(
    connect: ApiFactory, tag: str
) -> None:
    api: BcApi = await connect("bc")
    ops: list[WriteOp] = [Create({"displayName": f"{tag}-{i}"}) for i in range(4)]
    ops[1] = Create({"displayName": f"{tag}-bad", "type": "Bogus"})

    results = await api.write("customers", ops)

    assert [type(r).__name__ for r in results] == ["Written", "Rejected", "Written", "Written"]
    refused = results[1]
    assert isinstance(refused, Rejected) and refused.status == 400
    assert "Bogus" in refused.message
    assert len(await api.find("customers", tagged(tag))) == 3


async def test_more_ops_than_one_batch_holds(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc", batch_size=500)
    created = await create_customers(api, tag, 230)

    assert len({r.id for r in created}) == 230
    assert [r.fields["displayName"] for r in created] == [f"{tag}-{i:03d}" for i in range(230)]


async def test_a_create_with_an_id_is_refused(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")

    [result] = await api.write(
        "customers", [Create({"displayName": tag}, record_id=str(uuid.uuid4()))]
    )

    assert isinstance(result, Rejected)
    assert "assigns record ids" in result.message


async def test_stale_etag_is_stale(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")
    [row] = await create_customers(api, tag, 1)
    [fresh] = await api.write("customers", [Update(row.id, {"city": "Oslo"}, etag=row.etag)])
    assert isinstance(fresh, Written)

    stale = await api.write(
        "customers",
        [Update(row.id, {"city": "Bergen"}, etag=row.etag), Delete(row.id, etag=row.etag)],
    )

    assert [type(r) for r in stale] == [Stale, Stale]


async def test_update_without_etag_and_delete(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")
    [row] = await create_customers(api, tag, 1)

    [updated] = await api.write("customers", [Update(row.id, {"city": "Oslo"})])
    [deleted] = await api.write("customers", [Delete(row.id)])
    again = await api.write("customers", [Delete(row.id), Update(row.id, {"city": "x"})])

    assert isinstance(updated, Written) and updated.row is not None
    assert updated.row.fields["city"] == "Oslo"
    assert deleted == Written(None)
    assert [type(r) for r in again] == [Missing, Missing]


async def test_custom_api_route_for_salespeople(connect: ApiFactory, tag: str) -> None:
    api: BcApi = await connect("bc")

    [created] = await api.write("salespeople", [Create({"name": f"{tag} Sally"})])
    found = await api.find("salespeople", Call(Func.STARTSWITH, "name", tag))

    assert isinstance(created, Written) and created.row is not None
    assert [r.id for r in found] == [created.row.id]
    assert api.spec("salespeople").route.startswith("/BC/api/tablesync/integration/v1.0/")
