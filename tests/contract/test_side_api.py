"""The ``SideApi`` contract: one test class run on the in-memory side
(``tablesync.emulators.memory.MemorySide``) and on the real OData connector against the
project's emulators over sockets, for both sides.

Records are tagged with a prefix unique to the test, and reads filter on it, so tests
running against the shared emulator databases never see each other's rows. BC appends
a correlation id to its messages, so messages are compared by their start.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import pytest

from tablesync.core.events import Side
from tablesync.core.filters import (
    MAX_LENGTH,
    Call,
    Compare,
    Func,
    Op,
    disjoin,
    disjoined_within,
    to_odata,
)
from tablesync.core.records import (
    Changes,
    Create,
    Delete,
    Missing,
    Ref,
    Rejected,
    Row,
    Stale,
    Update,
    WriteOp,
    WriteValue,
    Written,
)
from tablesync.emulators.memory import MemorySide
from tablesync.errors import ChangeTrackingUnavailable, DeltaLinkExpired, ReadRefused
from tablesync.ports.api import SideApi
from tablesync.settings import with_database
from tests.conftest import InfraEndpoints, worker_database
from tests.connectors.conftest import ApiFactory, Emulators
from tests.contract.conftest import StepClock

SINCE_START = datetime.now(UTC) - timedelta(minutes=5)
PAGE = 3
"""Rows per page on both implementations, so every read below crosses pages."""

OpenSide = Callable[[Side], Awaitable[SideApi]]


@dataclass(frozen=True)
class Vocab:
    """What the tests write on one side: the table, its name field, its unique key."""

    side: Side
    table: str
    name: str
    key: str
    stamp: str
    unique: str

    def tagged(self, tag: str) -> Call:
        return Call(Func.STARTSWITH, self.name, tag)


VOCABS = {
    "bc": Vocab("bc", "customers", "displayName", "id", "lastModifiedDateTime", "number"),
    "dataverse": Vocab("dataverse", "accounts", "name", "accountid", "modifiedon", "accountnumber"),
}


def written(result: object) -> Row:
    assert isinstance(result, Written), result
    assert result.row is not None
    return result.row


async def create(api: SideApi, v: Vocab, tag: str, count: int, **extra: WriteValue) -> list[Row]:
    ops: list[WriteOp] = [Create({v.name: f"{tag}-{i:03d}", **extra}) for i in range(count)]
    return [written(r) for r in await api.write(v.table, ops)]


async def pages(iterator: AsyncIterator[list[Any]]) -> list[list[Any]]:
    return [page async for page in iterator]


def one(rows: dict[str, Row], record_id: str) -> Row:
    assert record_id in rows, rows
    return rows[record_id]


class Tracking(Protocol):
    """What a test does to a side's change tracking from outside its API."""

    async def expire(self, api: SideApi) -> None:
        """Every delta link given so far expires."""
        ...

    async def set_tracked(self, api: SideApi, table: str, tracked: bool) -> None: ...

    def late_update(
        self, api: SideApi, table: str, record_id: str, name: str, stamp: datetime
    ) -> AbstractAsyncContextManager[None]:
        """A transaction that stamps the record ``stamp`` and changes its name on entry,
        and commits only on exit."""
        ...


async def follow(api: SideApi, table: str, link: str | None) -> tuple[list[Changes], str]:
    """Every page of one change-tracking read, and the link it ends with."""
    found = await pages(api.track_changes(table, link))
    assert found, "a read of changes has at least one page"
    assert all(p.delta_link is None for p in found[:-1])
    last = found[-1].delta_link
    assert last is not None
    return found, last


def entries(found: list[Changes], ids: set[str]) -> tuple[dict[str, Row], list[str]]:
    """The rows changed and the ids deleted among ``ids`` (other tests share the tables)."""
    rows = {r.id: r for p in found for r in p.rows if r.id in ids}
    deleted = [i for p in found for i in p.deleted if i in ids]
    return rows, deleted


class SideApiContract:
    """Behaviour every ``SideApi`` shows, as the engine relies on it."""

    @pytest.fixture
    def open_side(self) -> OpenSide:
        raise NotImplementedError

    @pytest.fixture(params=["bc", "dataverse"])
    def v(self, request: pytest.FixtureRequest) -> Vocab:
        return VOCABS[request.param]

    @pytest.fixture
    async def api(self, open_side: OpenSide, v: Vocab) -> SideApi:
        return await open_side(v.side)

    # ------------------------------------------------------------ create and read back

    async def test_a_created_record_reads_back_as_written(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [row] = await create(api, v, tag, 1)

        assert row.id == row.id.lower() == str(uuid.UUID(row.id))
        assert row.fields[v.key] == row.id
        assert row.fields[v.name] == f"{tag}-000"
        assert row.modified_at.tzinfo is not None
        assert row.modified_at == datetime.fromisoformat(str(row.fields[v.stamp]))
        assert not any("@" in name for name in row.fields)
        assert row.etag is not None and row.etag.startswith('W/"')
        if v.side == "dataverse":
            assert row.etag == f'W/"{row.fields["versionnumber"]}"'
            assert row.modified_by == row.fields["_modifiedby_value"] is not None
        else:
            opaque = base64.b64decode(row.etag[3:-1]).decode()
            assert opaque.startswith("'") and opaque.endswith(";00;'")
            assert row.modified_by is None
        again = one(await api.get_many(v.table, [row.id]), row.id)
        assert again == row

    async def test_rows_read_are_copies(self, api: SideApi, v: Vocab, tag: str) -> None:
        [row] = await create(api, v, tag, 1)
        row.fields[v.name] = "changed by the caller"
        found = one(await api.get_many(v.table, [row.id]), row.id)
        found.fields[v.name] = "changed again"

        again = one(await api.get_many(v.table, [row.id]), row.id)

        assert again.fields[v.name] == f"{tag}-000"

    # ------------------------------------------------------------ updates and ETags

    async def test_an_update_with_the_current_etag_writes_a_new_version(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [row] = await create(api, v, tag, 1)

        [result] = await api.write(v.table, [Update(row.id, {v.name: f"{tag}-new"}, etag=row.etag)])

        updated = written(result)
        assert updated.id == row.id
        assert updated.fields[v.name] == f"{tag}-new"
        assert updated.etag != row.etag
        assert updated.modified_at >= row.modified_at
        assert one(await api.get_many(v.table, [row.id]), row.id) == updated

    async def test_an_update_with_an_old_etag_is_stale_and_changes_nothing(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [row] = await create(api, v, tag, 1)
        fresh = written(
            (await api.write(v.table, [Update(row.id, {v.name: f"{tag}-1"}, etag=row.etag)]))[0]
        )

        results = await api.write(
            v.table, [Update(row.id, {v.name: f"{tag}-2"}, etag=row.etag), Delete(row.id, row.etag)]
        )

        assert [type(r) for r in results] == [Stale, Stale]
        assert one(await api.get_many(v.table, [row.id]), row.id) == fresh

    async def test_an_update_without_etag_writes_whatever_the_version(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [row] = await create(api, v, tag, 1)
        await api.write(v.table, [Update(row.id, {v.name: f"{tag}-1"})])

        [result] = await api.write(v.table, [Update(row.id, {v.name: f"{tag}-2"})])

        assert written(result).fields[v.name] == f"{tag}-2"

    async def test_a_deleted_record_is_gone_and_missing_afterwards(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        rows = await create(api, v, tag, 2)

        deleted = await api.write(v.table, [Delete(rows[0].id, etag=rows[0].etag)])
        again = await api.write(
            v.table, [Delete(rows[0].id), Update(rows[0].id, {v.name: f"{tag}-x"})]
        )

        assert deleted == [Written(None)]
        assert [type(r) for r in again] == [Missing, Missing]
        assert set(await api.get_many(v.table, [r.id for r in rows])) == {rows[1].id}

    async def test_writes_to_an_absent_record_are_missing_and_create_nothing(
        self, api: SideApi, v: Vocab
    ) -> None:
        absent = str(uuid.uuid4())

        results = await api.write(v.table, [Update(absent, {v.name: "x"}), Delete(absent)])

        assert [type(r) for r in results] == [Missing, Missing]
        assert await api.get_many(v.table, [absent]) == {}

    # ------------------------------------------------------------ reads

    async def test_changed_since_pages_in_stamp_then_id_order(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 7)

        found = await pages(api.changed_since(v.table, SINCE_START, filter=v.tagged(tag)))

        assert [len(p) for p in found] == [PAGE, PAGE, 1]
        rows = [r for p in found for r in p]
        assert {r.id for r in rows} == {r.id for r in created}
        assert [(r.modified_at, r.id) for r in rows] == sorted((r.modified_at, r.id) for r in rows)

    async def test_changed_since_gives_exactly_the_rows_stamped_at_or_after_since(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 4)
        touched = [written(r) for r in await api.write(v.table, [Update(created[1].id, {})])]
        current = {r.id: r for r in [*created, *touched]}
        since = touched[0].modified_at
        later = max(r.modified_at for r in current.values()) + timedelta(hours=1)

        rows = [
            r
            for p in await pages(api.changed_since(v.table, since, filter=v.tagged(tag)))
            for r in p
        ]
        none = await pages(api.changed_since(v.table, later, filter=v.tagged(tag)))

        assert {r.id for r in rows} == {i for i, r in current.items() if r.modified_at >= since}
        assert touched[0].id in {r.id for r in rows}
        assert all(r.modified_at >= since for r in rows)
        assert none == []

    async def test_rows_changed_while_paging_are_not_lost(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 8)
        seen: list[str] = []
        unread: list[str] = []

        async for page in api.changed_since(v.table, SINCE_START, filter=v.tagged(tag)):
            if not seen:
                # Rows made in one second share a stamp and page in id order, so
                # which rows the first page holds is known only now.
                first = {r.id for r in page}
                unread = [r.id for r in created if r.id not in first][-2:]
                touched = [page[0].id, *unread]
                results = await api.write(v.table, [Update(i, {}) for i in touched])
                assert all(isinstance(r, Written) for r in results)
            seen.extend(r.id for r in page)

        assert set(seen) == {r.id for r in created}
        # A row changed before its page was read moves behind the cursor and is
        # read there once; one already read may come again.
        assert [seen.count(i) for i in unread] == [1, 1]

    async def test_read_all_with_a_filter_pages_in_id_order(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 5)
        await create(api, v, f"x{tag}", 2)

        found = await pages(api.read_all(v.table, filter=v.tagged(tag)))

        assert [len(p) for p in found] == [PAGE, 2]
        assert [r.id for p in found for r in p] == sorted(r.id for r in created)

    async def test_read_ids_are_every_id_in_order_without_deleted_ones(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 4)
        await api.write(v.table, [Delete(created[0].id)])

        found = await pages(api.read_ids(v.table))

        ids = [i for p in found for i in p]
        assert all(len(p) <= PAGE for p in found)
        assert ids == sorted(ids)
        assert {r.id for r in created[1:]} <= set(ids)
        assert created[0].id not in ids

    async def test_get_many_gives_the_subset_that_exists(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 3)
        asked = [created[0].id.upper(), created[2].id, created[2].id, str(uuid.uuid4()), "nope"]

        found = await api.get_many(v.table, asked)

        assert set(found) == {created[0].id, created[2].id}
        assert found[created[2].id] == created[2]
        assert await api.get_many(v.table, []) == {}

    async def test_find_gives_matching_rows_by_id_and_at_most_top(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 5)
        ordered = sorted(r.id for r in created)

        every = await api.find(v.table, v.tagged(tag))
        top = await api.find(v.table, v.tagged(tag), top=2)
        exact = await api.find(v.table, Compare(v.name, Op.EQ, f"{tag}-003"))

        assert [r.id for r in every] == ordered
        assert [r.id for r in top] == ordered[:2]
        assert [r.id for r in exact] == [created[3].id]
        assert await api.find(v.table, v.tagged(tag), top=0) == []

    async def test_text_filters_follow_the_sides_case_rules(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 1)

        found = await api.find(v.table, Call(Func.STARTSWITH, v.name, tag.upper()))

        # Dataverse compares text without regard to case; BC, as the emulator stores it, does.
        expected = [created[0].id] if v.side == "dataverse" else []
        assert [r.id for r in found] == expected

    async def test_a_filter_on_an_unknown_property_is_a_refused_read(
        self, api: SideApi, v: Vocab
    ) -> None:
        with pytest.raises(ReadRefused, match="nosuchfield") as raised:
            await api.find(v.table, Compare("nosuchfield", Op.EQ, 1))
        assert raised.value.status == 400
        assert raised.value.entity_set == v.table
        assert not raised.value.credentials

    async def test_a_filter_longer_than_the_grammar_allows_is_a_refused_read(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        alternatives = [Compare(v.name, Op.EQ, f"{tag}-{n:04d}") for n in range(200)]
        query = disjoin(*alternatives)
        assert query is not None and len(to_odata(query)) > MAX_LENGTH

        with pytest.raises(ReadRefused, match="4096") as raised:
            await api.find(v.table, query)
        assert raised.value.status == 400
        assert not raised.value.credentials
        for chunk in disjoined_within(alternatives, lambda a: a):
            within = disjoin(*chunk)
            assert within is not None
            assert await api.find(v.table, within) == []

    async def test_read_versions_give_every_row_with_its_etag_key_and_stamp_only(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        created = await create(api, v, tag, 4)

        found = await pages(api.read_versions(v.table))

        rows = [r for p in found for r in p]
        assert all(len(p) <= PAGE for p in found)
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        mine = {r.id: r for r in rows if r.id in {c.id for c in created}}
        assert set(mine) == {c.id for c in created}
        for row in created:
            seen = mine[row.id]
            assert (seen.etag, seen.modified_at) == (row.etag, row.modified_at)
            assert seen.fields == {v.key: row.id, v.stamp: row.fields[v.stamp]}

    # ------------------------------------------------------------ change tracking

    async def test_bc_tracks_no_changes(self, open_side: OpenSide) -> None:
        api = await open_side("bc")

        with pytest.raises(ChangeTrackingUnavailable):
            await pages(api.track_changes("customers"))

    async def test_a_delta_link_gives_what_changed_and_was_deleted_since(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        v = VOCABS["dataverse"]
        before = await create(api, v, tag, 3)
        first, link = await follow(api, v.table, None)
        assert all(len(p.rows) <= PAGE and not p.deleted for p in first)
        assert {r.id for r in before} <= {r.id for p in first for r in p.rows}

        [changed] = [
            written(r)
            for r in await api.write(v.table, [Update(before[0].id, {v.name: f"{tag}-new"})])
        ]
        await api.write(v.table, [Delete(before[1].id)])
        [added] = await create(api, v, f"{tag}a", 1)
        [fleeting] = await create(api, v, f"{tag}f", 1)
        await api.write(v.table, [Delete(fleeting.id)])
        ids = {r.id for r in [*before, added, fleeting]}

        found, again = await follow(api, v.table, link)

        rows, deleted = entries(found, ids)
        assert rows == {changed.id: changed, added.id: added}
        assert sorted(deleted) == sorted([before[1].id, fleeting.id])
        order = [kind for p in found for kind in ["row"] * len(p.rows) + ["gone"] * len(p.deleted)]
        assert order == sorted(order, key=lambda kind: kind == "gone")
        assert entries(await pages(api.track_changes(v.table, link)), ids) == (rows, deleted)
        assert entries((await follow(api, v.table, again))[0], ids) == ({}, [])

    async def test_changes_page_at_the_page_size(self, open_side: OpenSide, tag: str) -> None:
        api = await open_side("dataverse")
        v = VOCABS["dataverse"]
        _, link = await follow(api, v.table, None)
        created = await create(api, v, tag, 2 * PAGE + 1)

        found, _ = await follow(api, v.table, link)

        assert len(found) >= 3
        assert all(len(p.rows) + len(p.deleted) <= PAGE for p in found)
        assert set(entries(found, {r.id for r in created})[0]) == {r.id for r in created}

    async def test_a_late_commit_is_in_the_changes_after_the_read_it_missed(
        self, open_side: OpenSide, tracking: Tracking, tag: str
    ) -> None:
        api = await open_side("dataverse")
        v = VOCABS["dataverse"]
        [row] = await create(api, v, tag, 1)
        _, link = await follow(api, v.table, None)
        long_ago = row.modified_at - timedelta(hours=1)

        async with tracking.late_update(api, v.table, row.id, f"{tag}-late", long_ago):
            # A change committed meanwhile moves the next link past every change committed
            # before it: the late one must still come after.
            [meanwhile] = await create(api, v, f"{tag}m", 1)
            found, after = await follow(api, v.table, link)
            assert set(entries(found, {row.id, meanwhile.id})[0]) == {meanwhile.id}
        found, _ = await follow(api, v.table, after)

        late = entries(found, {row.id})[0][row.id]
        assert late.fields[v.name] == f"{tag}-late"
        assert late.modified_at == long_ago.replace(microsecond=0)
        # Polling by stamp from where the first read stood never sees it.
        polled = await pages(api.changed_since(v.table, row.modified_at, filter=v.tagged(tag)))
        assert row.id not in {r.id for p in polled for r in p}

    async def test_an_expired_delta_link_is_refused_and_a_new_read_starts_again(
        self, open_side: OpenSide, tracking: Tracking, tag: str
    ) -> None:
        api = await open_side("dataverse")
        v = VOCABS["dataverse"]
        _, link = await follow(api, v.table, None)
        await tracking.expire(api)
        [row] = await create(api, v, tag, 1)

        with pytest.raises(DeltaLinkExpired) as raised:
            await pages(api.track_changes(v.table, link))
        found, fresh = await follow(api, v.table, None)
        [touched] = [written(r) for r in await api.write(v.table, [Update(row.id, {})])]
        changes, _ = await follow(api, v.table, fresh)

        assert raised.value.status == 400
        assert "Please perform a full sync" in str(raised.value)
        assert row.id in {r.id for p in found for r in p.rows}
        assert entries(changes, {row.id})[0] == {row.id: touched}
        with pytest.raises(DeltaLinkExpired):
            await pages(api.track_changes(v.table, link + "0"))

    async def test_a_table_without_change_tracking_refuses_it(
        self, open_side: OpenSide, tracking: Tracking
    ) -> None:
        api = await open_side("dataverse")
        _, link = await follow(api, "contacts", None)
        await tracking.set_tracked(api, "contacts", False)
        try:
            with pytest.raises(ChangeTrackingUnavailable):
                await pages(api.track_changes("contacts"))
            with pytest.raises(ChangeTrackingUnavailable):
                await pages(api.track_changes("contacts", link))
            assert (await follow(api, "accounts", None))[1]
        finally:
            await tracking.set_tracked(api, "contacts", True)
        await follow(api, "contacts", link)

    # ------------------------------------------------------------ refusals

    async def test_a_taken_key_refuses_the_create(self, api: SideApi, v: Vocab, tag: str) -> None:
        [first] = await create(api, v, tag, 1, **{v.unique: tag})
        taken = tag.upper() if v.side == "dataverse" else tag

        [result] = await api.write(v.table, [Create({v.name: f"{tag}-b", v.unique: taken})])

        assert isinstance(result, Rejected), result
        if v.side == "bc":
            assert result.status == 400
            assert result.message.startswith(
                "The record in table Customer already exists. Identification fields and "
                f"values: No.='{tag}'"
            )
        else:
            # Dataverse alternate keys ignore case; DuplicateRecord is a 412.
            assert result.status == 412
            assert result.message == "A record with matching key values already exists."
        assert [r.id for r in await api.find(v.table, v.tagged(tag))] == [first.id]

    async def test_an_update_to_a_taken_key_is_refused(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [first] = await create(api, v, tag, 1, **{v.unique: tag})
        [second] = await create(api, v, f"{tag}b", 1)

        [result] = await api.write(v.table, [Update(second.id, {v.unique: tag}, etag=second.etag)])

        if v.side == "bc":
            assert isinstance(result, Rejected) and result.status == 400
        else:
            # The connector reads any 412 on an update as a stale ETag, DuplicateRecord too.
            assert isinstance(result, Stale)
            assert result.message == "A record with matching key values already exists."
        assert one(await api.get_many(v.table, [second.id]), second.id) == second
        assert first.fields[v.unique] == tag

    async def test_a_bad_value_is_rejected_with_the_apis_message(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [result] = await api.write(v.table, [Create({v.name: tag + "x" * 200})])

        assert isinstance(result, Rejected) and result.status == 400
        assert result.message.startswith("The length of the string is ")
        assert f"Property: '{v.name}'" in result.message

    async def test_a_read_only_field_is_rejected(self, api: SideApi, v: Vocab, tag: str) -> None:
        read_only = "balanceDue" if v.side == "bc" else "versionnumber"

        [result] = await api.write(v.table, [Create({v.name: tag, read_only: 5})])

        assert isinstance(result, Rejected) and result.status == 400
        assert result.message.startswith(f"Control '{read_only}' is read-only.")

    async def test_one_refused_op_does_not_stop_the_others(
        self, api: SideApi, v: Vocab, tag: str
    ) -> None:
        [existing, stale] = await create(api, v, tag, 2)
        await api.write(v.table, [Update(stale.id, {})])
        ops: list[WriteOp] = [
            Create({v.name: f"{tag}-a"}),
            Create({v.name: f"{tag}-" + "x" * 200}),
            Update(str(uuid.uuid4()), {v.name: f"{tag}-gone"}),
            Update(existing.id, {v.name: f"{tag}-changed"}, etag=existing.etag),
            Delete(stale.id, etag=stale.etag),
            Create({v.name: f"{tag}-z"}),
        ]

        results = await api.write(v.table, ops)

        assert [type(r) for r in results] == [Written, Rejected, Missing, Written, Stale, Written]
        names = sorted(str(r.fields[v.name]) for r in await api.find(v.table, v.tagged(tag)))
        assert names == sorted([f"{tag}-a", f"{tag}-changed", f"{tag}-001", f"{tag}-z"])

    # ------------------------------------------------------------ lookups

    async def test_a_reference_to_a_missing_record_is_refused(
        self, open_side: OpenSide, tag: str
    ) -> None:
        bc = await open_side("bc")
        dataverse = await open_side("dataverse")
        absent = str(uuid.uuid4())

        [by_code] = await bc.write(
            "customers", [Create({"displayName": tag, "salespersonCode": tag})]
        )
        [by_bind] = await dataverse.write(
            "contacts",
            [Create({"lastname": tag, "parentcustomerid_account": Ref("accounts", absent)})],
        )

        assert isinstance(by_code, Rejected) and by_code.status == 400
        assert by_code.message.startswith(
            f"The field Salesperson Code of table Customer contains a value ({tag}) that cannot "
            "be found in the related table (Salesperson/Purchaser)."
        )
        # "ObjectDoesNotExist": Dataverse answers 404 for a lookup bound to nothing.
        assert by_bind == Rejected(404, f"account With Id = {absent} Does Not Exist")
        assert await bc.find("customers", VOCABS["bc"].tagged(tag)) == []
        assert await dataverse.find("contacts", Call(Func.STARTSWITH, "lastname", tag)) == []

    async def test_an_update_binding_a_missing_record(self, open_side: OpenSide, tag: str) -> None:
        bc = await open_side("bc")
        dataverse = await open_side("dataverse")
        [customer] = await create(bc, VOCABS["bc"], tag, 1)
        [contact] = [
            written(r) for r in await dataverse.write("contacts", [Create({"lastname": tag})])
        ]
        absent = str(uuid.uuid4())

        [by_code] = await bc.write("customers", [Update(customer.id, {"salespersonCode": tag})])
        [by_bind] = await dataverse.write(
            "contacts", [Update(contact.id, {"parentcustomerid_account": Ref("accounts", absent)})]
        )

        assert isinstance(by_code, Rejected) and by_code.status == 400
        # The 404 of the bind reads, through the connector, as the contact being gone.
        assert by_bind == Missing(f"account With Id = {absent} Does Not Exist")
        assert one(await dataverse.get_many("contacts", [contact.id]), contact.id) == contact

    async def test_an_item_names_an_existing_unit_and_a_customer_existing_terms(
        self, open_side: OpenSide, tag: str
    ) -> None:
        bc = await open_side("bc")
        code = tag[-10:].upper()
        [unit] = [written(r) for r in await bc.write("unitsOfMeasure", [Create({"code": code})])]
        [item, wrong] = await bc.write(
            "items",
            [
                Create({"displayName": tag, "baseUnitOfMeasureCode": code}),
                Create({"displayName": tag, "baseUnitOfMeasureCode": code[:-1] + "#"}),
            ],
        )
        [terms] = await bc.write(
            "customers", [Create({"displayName": tag, "paymentTermsId": str(uuid.uuid4())})]
        )

        assert written(item).fields["baseUnitOfMeasureId"] == unit.id
        assert isinstance(wrong, Rejected) and wrong.message.startswith(
            "The field Base Unit of Measure of table Item contains a value"
        )
        assert isinstance(terms, Rejected) and terms.message.startswith(
            "The field Payment Terms Id of table Customer contains a value"
        )

    async def test_a_unit_group_has_a_base_unit_a_product_is_sold_in(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        groups = [
            written(r)
            for r in await api.write(
                "uomschedules",
                [Create({"name": f"{tag}-{i}", "baseuomname": f"{tag}-{i}-base"}) for i in (1, 2)],
            )
        ]
        bases = [
            next(
                iter(
                    await api.find("uoms", Compare("_uomscheduleid_value", Op.EQ, uuid.UUID(g.id)))
                )
            )
            for g in groups
        ]
        group, other = (Ref("uomschedules", g.id) for g in groups)
        base, other_base = (Ref("uoms", b.id) for b in bases)
        product = {"name": tag, "productnumber": tag, "quantitydecimal": 0}

        results = await api.write(
            "products",
            [
                Create(product),
                Create({**product, "DefaultUoMScheduleId": group}),
                Create({**product, "DefaultUoMScheduleId": group, "DefaultUoMId": other_base}),
                Create({**product, "DefaultUoMScheduleId": group, "DefaultUoMId": base}),
            ],
        )

        assert [(b.fields["name"], b.fields["isschedulebaseuom"]) for b in bases] == [
            (f"{tag}-1-base", True),
            (f"{tag}-2-base", True),
        ]
        no_group, no_unit, foreign, made = results
        assert no_group == Rejected(
            400,
            "Required field 'defaultuomscheduleid' is missing: product cannot be created "
            "without it.",
        )
        assert isinstance(no_unit, Rejected) and "'defaultuomid'" in no_unit.message
        assert foreign == Rejected(
            400, "The default unit is not a unit of the product's unit group."
        )
        assert written(made).fields["_defaultuomid_value"] == bases[0].id
        [moved] = await api.write(
            "products", [Update(written(made).id, {"DefaultUoMScheduleId": other})]
        )
        assert isinstance(moved, Rejected)

    async def test_dataverse_binds_and_clears_a_lookup_and_a_delete_removes_the_link(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        [account] = await create(api, VOCABS["dataverse"], tag, 1)
        [contact] = [
            written(r)
            for r in await api.write(
                "contacts",
                [
                    Create(
                        {
                            "firstname": "Ada",
                            "lastname": tag,
                            "parentcustomerid_account": Ref("accounts", account.id),
                        }
                    )
                ],
            )
        ]
        [other] = [
            written(r)
            for r in await api.write(
                "contacts",
                [
                    Create(
                        {"lastname": tag, "parentcustomerid_account": Ref("accounts", account.id)}
                    )
                ],
            )
        ]
        [cleared] = await api.write(
            "contacts", [Update(other.id, {"parentcustomerid_account@odata.bind": None})]
        )

        [deleted] = await api.write("accounts", [Delete(account.id)])

        assert contact.fields["_parentcustomerid_value"] == account.id
        assert contact.fields["fullname"] == f"Ada {tag}"
        assert written(cleared).fields["_parentcustomerid_value"] is None
        assert deleted == Written(None)
        after = one(await api.get_many("contacts", [contact.id]), contact.id)
        assert after.fields["_parentcustomerid_value"] is None
        # ON DELETE SET NULL: the contact's version and stamp stay as they were.
        assert (after.etag, after.modified_at) == (contact.etag, contact.modified_at)

    async def test_dataverse_create_with_an_id_is_an_upsert(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        record_id = str(uuid.uuid4())

        [first] = await api.write("accounts", [Create({"name": f"{tag}-a"}, record_id=record_id)])
        [again] = await api.write("accounts", [Create({"name": f"{tag}-b"}, record_id=record_id)])

        made, redone = written(first), written(again)
        assert made.id == redone.id == record_id
        assert redone.fields["name"] == f"{tag}-b"
        assert redone.fields["createdon"] == made.fields["createdon"]
        assert redone.etag != made.etag
        assert [r.id for r in await api.find("accounts", VOCABS["dataverse"].tagged(tag))] == [
            record_id
        ]

    async def test_a_dataverse_create_only_new_never_writes_over_its_record(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        record_id = str(uuid.uuid4())

        [first] = await api.write(
            "accounts", [Create({"name": f"{tag}-a"}, record_id=record_id, only_new=True)]
        )
        made = written(first)
        [late] = await api.write(
            "accounts", [Create({"name": f"{tag}-b"}, record_id=record_id, only_new=True)]
        )

        # Refused as Dataverse refuses a duplicate (412), the record as it was.
        assert made.id == record_id and isinstance(late, Rejected) and late.status == 412
        [kept] = await api.find("accounts", VOCABS["dataverse"].tagged(tag))
        assert (kept.fields["name"], kept.etag) == (f"{tag}-a", made.etag)

    async def test_dataverse_refuses_to_delete_a_currency_in_use(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("dataverse")
        [currency] = [
            written(r)
            for r in await api.write(
                "transactioncurrencies",
                [
                    Create(
                        {
                            "isocurrencycode": tag[1:6],
                            "currencyname": tag,
                            "currencysymbol": "¤",
                            "exchangerate": 2.5,
                        }
                    )
                ],
            )
        ]
        bind = Ref("transactioncurrencies", currency.id)
        [account] = await create(api, VOCABS["dataverse"], tag, 1, transactioncurrencyid=bind)

        [refused] = await api.write("transactioncurrencies", [Delete(currency.id)])

        assert account.fields["_transactioncurrencyid_value"] == currency.id
        assert refused == Rejected(
            405,
            "The object you tried to delete is associated with another object and cannot be "
            "deleted.",
        )
        assert set(await api.get_many("transactioncurrencies", [currency.id])) == {currency.id}

    async def test_bc_numbers_records_and_assigns_their_ids(
        self, open_side: OpenSide, tag: str
    ) -> None:
        api = await open_side("bc")
        [first, second] = await create(api, VOCABS["bc"], tag, 2)

        [with_id] = await api.write(
            "customers", [Create({"displayName": tag}, record_id=str(uuid.uuid4()))]
        )

        numbers = [str(first.fields["number"]), str(second.fields["number"])]
        assert all(n.startswith("C") and len(n) >= 6 for n in numbers)
        assert numbers[0] != numbers[1]
        assert with_id == Rejected(
            400, "Business Central assigns record ids: create without record_id"
        )

    async def test_bc_codes_name_their_records(self, open_side: OpenSide, tag: str) -> None:
        api = await open_side("bc")
        code = tag[1:]
        [currency] = [written(r) for r in await api.write("currencies", [Create({"code": code})])]
        [salesperson] = [
            written(r) for r in await api.write("salespeople", [Create({"code": tag, "name": tag})])
        ]
        [customer] = await create(api, VOCABS["bc"], tag, 1, currencyCode=code, salespersonCode=tag)
        [local] = await create(api, VOCABS["bc"], f"{tag}l", 1, currencyCode="USD")
        [by_id] = await create(api, VOCABS["bc"], f"{tag}i", 1, currencyId=currency.id)

        [contact] = [
            written(r)
            for r in await api.write(
                "contacts",
                [Create({"displayName": f"{tag} ada", "companyNumber": customer.fields["number"]})],
            )
        ]

        assert customer.fields["currencyId"] == currency.id
        assert customer.fields["salespersonCode"] == salesperson.fields["code"] == tag
        assert local.fields["currencyId"] == "00000000-0000-0000-0000-000000000000"
        assert by_id.fields["currencyCode"] == code
        assert contact.fields["contactBusinessRelation"] == "Customer"
        assert contact.fields["companyName"] == f"{tag}-000"
        assert contact.fields["searchName"] == f"{tag} ada".upper()


class MemoryTracking:
    async def expire(self, api: SideApi) -> None:
        assert isinstance(api, MemorySide)
        api.expire_delta_links()

    async def set_tracked(self, api: SideApi, table: str, tracked: bool) -> None:
        assert isinstance(api, MemorySide)
        if tracked:
            api.untracked.discard(table)
        else:
            api.untracked.add(table)

    @asynccontextmanager
    async def late_update(
        self, api: SideApi, table: str, record_id: str, name: str, stamp: datetime
    ) -> AsyncIterator[None]:
        assert isinstance(api, MemorySide)
        yield
        # A write takes effect when it is made: made now, stamped then, is a late commit.
        api.user_update(table, record_id, {VOCABS["dataverse"].name: name}, stamped=stamp)


class TestMemorySide(SideApiContract):
    @pytest.fixture
    def open_side(self) -> OpenSide:
        clock = StepClock()

        async def open_one(side: Side) -> SideApi:
            return MemorySide(side, clock, page_size=PAGE)

        return open_one

    @pytest.fixture
    def tracking(self) -> Tracking:
        return MemoryTracking()


@dataclass
class EmulatorTracking:
    emulators: Emulators
    dsn: str

    async def expire(self, api: SideApi) -> None:
        await self.emulators.control("dataverse", "POST", "change-tracking/expire")

    async def set_tracked(self, api: SideApi, table: str, tracked: bool) -> None:
        body = {"change_tracking": {table: tracked}}
        await self.emulators.control("dataverse", "PATCH", "config", body)

    @asynccontextmanager
    async def late_update(
        self, api: SideApi, table: str, record_id: str, name: str, stamp: datetime
    ) -> AsyncIterator[None]:
        assert table == "accounts"
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                # What a plug-in or a long $batch does: the row is stamped when it is
                # written, and the transaction commits a good while later.
                await conn.execute(
                    "UPDATE accounts SET name = $1, versionnumber = nextval('ts_version'),"
                    " modifiedon = date_trunc('second', $2::timestamptz) WHERE accountid = $3",
                    name,
                    stamp,
                    uuid.UUID(record_id),
                )
                yield
        finally:
            await conn.close()


@pytest.mark.integration
class TestODataSide(SideApiContract):
    @pytest.fixture
    def open_side(self, connect: ApiFactory) -> OpenSide:
        async def open_one(side: Side) -> SideApi:
            api: SideApi = await connect(side, page_size=PAGE)
            return api

        return open_one

    @pytest.fixture
    def tracking(self, emulators: Emulators, infra: InfraEndpoints) -> Tracking:
        dsn = with_database(infra.database_dsn, worker_database("tablesync_connectors_dataverse"))
        return EmulatorTracking(emulators, dsn)
