"""The Dataverse connector's bulk messages (CreateMultiple, UpsertMultiple, UpdateMultiple)
against the Dataverse emulator, over real sockets: which writes go in bulk, what each
record's result is, and the ``$batch`` fallback of a bulk request refused as a whole."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tablesync.adapters.odata import DataverseApi
from tablesync.core.filters import Call, Func
from tablesync.core.records import (
    Create,
    Missing,
    Ref,
    Rejected,
    Row,
    Update,
    WriteOp,
    WriteResult,
    Written,
)
from tests.connectors.conftest import Emulators

pytestmark = pytest.mark.integration

CREATE = "/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.CreateMultiple"
UPSERT = "/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpsertMultiple"
UPDATE = "/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpdateMultiple"
BATCH = "/api/data/v9.2/$batch"


class Recording(httpx.AsyncBaseTransport):
    """A real transport that notes the path and status of every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.sent.append((request.url.path, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def take(self) -> list[tuple[str, int]]:
        sent, self.sent = self.sent, []
        return sent


Open = Callable[..., Awaitable[tuple[DataverseApi, Recording]]]


@pytest.fixture
async def dataverse(emulators: Emulators) -> AsyncIterator[Open]:
    """``await dataverse(**settings)``: a connector and the log of its requests."""
    opened: list[DataverseApi] = []

    async def open_one(**overrides: Any) -> tuple[DataverseApi, Recording]:
        recording = Recording()
        api = DataverseApi(emulators.settings("dataverse", **overrides), transport=recording)
        opened.append(api)
        return api, recording

    yield open_one
    for api in opened:
        await api.aclose()


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def _rows(results: list[WriteResult]) -> list[Row]:
    rows = [r.row for r in results if isinstance(r, Written) and r.row is not None]
    assert len(rows) == len(results), results
    return rows


async def _stored(api: DataverseApi, tag: str) -> dict[str, Row]:
    found = await api.find("accounts", Call(Func.STARTSWITH, "name", tag))
    return {row.id: row for row in found}


async def test_creates_go_in_one_create_multiple_and_come_back_as_stored(
    dataverse: Open, tag: str
) -> None:
    api, sent = await dataverse()
    ids = _ids(25)
    ops: list[WriteOp] = [
        Create({"name": f"{tag}-{n:02d}", "creditlimit": n}, record_id=i.upper(), only_new=True)
        for n, i in enumerate(ids)
    ]

    results = await api.write("accounts", ops)

    assert sent.take() == [(CREATE, 200), (BATCH, 200)]
    rows = _rows(results)
    assert [r.id for r in rows] == ids
    assert [r.fields["name"] for r in rows] == [f"{tag}-{n:02d}" for n in range(25)]
    assert await _stored(api, tag) == {r.id: r for r in rows}
    assert all(r.etag is not None and r.modified_by is not None for r in rows)


async def test_bulk_size_splits_a_write_and_ids_read_back_in_one_batch(
    dataverse: Open, tag: str
) -> None:
    api, sent = await dataverse(bulk_size=120, bulk_split_min=0)
    ops: list[WriteOp] = [
        Create({"name": f"{tag}-{n:03d}"}, record_id=i, only_new=True)
        for n, i in enumerate(_ids(300))
    ]

    results = await api.write("accounts", ops)

    # 300 ids are more than one filter holds: the read back is one $batch of several GETs.
    assert sent.take() == [(CREATE, 200)] * 3 + [(BATCH, 200)]
    assert len(_rows(results)) == 300
    assert len(await _stored(api, tag)) == 300


@pytest.mark.parametrize(
    ("records", "split_min", "connections", "requests"),
    [(500, 200, 16, 2), (500, 100, 16, 5), (500, 100, 3, 3), (150, 200, 16, 1), (99, 0, 16, 1)],
)
async def test_a_large_write_goes_out_as_requests_side_by_side(
    dataverse: Open, tag: str, records: int, split_min: int, connections: int, requests: int
) -> None:
    api, sent = await dataverse(bulk_split_min=split_min, max_connections=connections)
    ids = _ids(records)
    ops: list[WriteOp] = [
        Create({"name": f"{tag}-{n:03d}"}, record_id=i, only_new=True) for n, i in enumerate(ids)
    ]

    results = await api.write("accounts", ops)

    assert sent.take() == [(CREATE, 200)] * requests + [(BATCH, 200)]
    assert [r.id for r in _rows(results)] == ids
    assert len(await _stored(api, tag)) == records


async def test_an_existing_row_sends_its_chunk_through_batch(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse()
    ids = _ids(15)
    [taken] = await api.write("accounts", [Create({"name": f"{tag}-kept"}, record_id=ids[4])])
    sent.take()
    ops: list[WriteOp] = [
        Create({"name": f"{tag}-{n:02d}"}, record_id=i, only_new=True) for n, i in enumerate(ids)
    ]

    results = await api.write("accounts", ops)

    assert sent.take() == [(CREATE, 412), (BATCH, 200)]
    # Refused as a duplicate, as the create's own PATCH with If-None-Match: * is.
    assert isinstance(results[4], Rejected) and results[4].status == 412
    assert all(
        isinstance(r, Written) and r.row is not None for i, r in enumerate(results) if i != 4
    )
    stored = await _stored(api, tag)
    assert len(stored) == 15
    assert isinstance(taken, Written) and taken.row is not None
    assert stored[ids[4]].fields["name"] == f"{tag}-kept"
    assert stored[ids[4]].etag == taken.row.etag


async def test_upserts_go_in_upsert_multiple(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse()
    ids = _ids(12)
    before = _rows(
        await api.write("accounts", [Create({"name": f"{tag}-old"}, record_id=i) for i in ids[:5]])
    )
    sent.take()

    results = await api.write(
        "accounts", [Create({"name": f"{tag}-{n:02d}"}, record_id=i) for n, i in enumerate(ids)]
    )

    assert sent.take() == [(UPSERT, 204), (BATCH, 200)]
    rows = _rows(results)
    assert [r.fields["name"] for r in rows] == [f"{tag}-{n:02d}" for n in range(12)]
    for old, new in zip(before, rows, strict=False):
        assert new.id == old.id
        assert new.fields["createdon"] == old.fields["createdon"]
        assert new.etag != old.etag
    assert len(await _stored(api, tag)) == 12


async def test_updates_without_an_etag_go_in_update_multiple(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse()
    ids = _ids(12)
    await api.write(
        "accounts",
        [Create({"name": f"{tag}-{n}"}, record_id=i, only_new=True) for n, i in enumerate(ids)],
    )
    sent.take()

    results = await api.write(
        "accounts", [Update(i, {"description": f"d{n}"}) for n, i in enumerate(ids)]
    )

    assert sent.take() == [(UPDATE, 204), (BATCH, 200)]
    assert [r.fields["description"] for r in _rows(results)] == [f"d{n}" for n in range(12)]


async def test_a_missing_row_sends_the_updates_through_batch(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse()
    ids = _ids(12)
    await api.write(
        "accounts",
        [Create({"name": f"{tag}-{n}"}, record_id=i, only_new=True) for n, i in enumerate(ids)],
    )
    absent = str(uuid.uuid4())
    sent.take()

    results = await api.write(
        "accounts", [Update(i, {"description": "d"}) for i in [*ids[:6], absent, *ids[6:]]]
    )

    assert sent.take() == [(UPDATE, 404), (BATCH, 200)]
    assert isinstance(results[6], Missing)
    assert all(
        isinstance(r, Written) and r.row is not None for i, r in enumerate(results) if i != 6
    )
    # If-Match: * semantics: the update made no row.
    assert await api.get_many("accounts", [absent]) == {}


async def test_refused_records_are_found_by_batch_and_the_rest_written(
    dataverse: Open, tag: str
) -> None:
    api, sent = await dataverse()
    [contact] = _rows(
        await api.write("contacts", [Create({"lastname": tag}, record_id=str(uuid.uuid4()))])
    )
    sent.take()
    ops: list[WriteOp] = [
        Create(
            {"name": f"{tag}-{n:02d}", "primarycontactid": Ref("contacts", contact.id)},
            record_id=i,
            only_new=True,
        )
        for n, i in enumerate(_ids(20))
    ]
    ops[3] = Create({"name": f"{tag}-" + "x" * 200}, record_id=str(uuid.uuid4()), only_new=True)
    ops[9] = Create(
        {"name": f"{tag}-09", "primarycontactid": Ref("contacts", str(uuid.uuid4()))},
        record_id=str(uuid.uuid4()),
        only_new=True,
    )

    results = await api.write("accounts", ops)

    assert sent.take() == [(CREATE, 400), (BATCH, 200)]
    assert [type(r).__name__ for i, r in enumerate(results) if i in (3, 9)] == ["Rejected"] * 2
    refused = results[9]
    assert isinstance(refused, Rejected) and refused.status == 404
    written = [r for i, r in enumerate(results) if i not in (3, 9)]
    assert all(
        isinstance(r, Written)
        and r.row is not None
        and r.row.fields["_primarycontactid_value"] == contact.id
        for r in written
    )
    assert len(await _stored(api, tag)) == 18


async def test_what_bulk_cannot_say_stays_on_batch(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse()
    ids = _ids(12)
    rows = _rows(
        await api.write(
            "accounts",
            [Create({"name": f"{tag}-{n}"}, record_id=i, only_new=True) for n, i in enumerate(ids)],
        )
    )
    sent.take()

    with_etags = await api.write(
        "accounts", [Update(r.id, {"description": "e"}, etag=r.etag) for r in rows]
    )
    without_ids = await api.write("accounts", [Create({"name": f"{tag}-n{n}"}) for n in range(12)])
    few = await api.write(
        "accounts",
        [Update(i, {"description": "f"}) for i in ids[:5]]
        + [Create({"name": f"{tag}-u{n}"}, record_id=i) for n, i in enumerate(ids[5:10])],
    )
    # A record written twice in one write keeps its order: both go through $batch.
    twice = await api.write(
        "accounts",
        [Update(i, {"description": "g"}) for i in ids[:11]]
        + [Update(ids[0], {"description": "h"})],
    )

    assert [path for path, _ in sent.take()] == [BATCH] * 3 + [UPDATE, BATCH, BATCH]
    assert all(isinstance(r, Written) for r in [*with_etags, *without_ids, *few, *twice])
    stored = await _stored(api, tag)
    assert stored[ids[0]].fields["description"] == "h"
    assert stored[ids[11]].fields["description"] == "e"


async def test_bulk_min_zero_keeps_every_write_on_batch(dataverse: Open, tag: str) -> None:
    api, sent = await dataverse(bulk_min=0)
    results = await api.write(
        "accounts", [Create({"name": f"{tag}-{n}"}, record_id=i) for n, i in enumerate(_ids(30))]
    )
    assert [path for path, _ in sent.take()] == [BATCH]
    assert len(_rows(results)) == 30


@pytest.mark.parametrize("status", [429, 503])
async def test_a_throttled_or_unavailable_bulk_request_is_sent_again(
    dataverse: Open,
    tag: str,
    faults: Callable[..., Awaitable[None]],
    status: int,
) -> None:
    api, sent = await dataverse()
    await faults("dataverse", status, count=1, retry_after=1)

    results = await api.write(
        "accounts",
        [
            Create({"name": f"{tag}-{n}"}, record_id=i, only_new=True)
            for n, i in enumerate(_ids(20))
        ],
    )

    assert sent.take() == [(CREATE, status), (CREATE, 200), (BATCH, 200)]
    assert len(_rows(results)) == 20
    assert api.stats.retries == 1
    assert api.stats.throttled == (1 if status == 429 else 0)
