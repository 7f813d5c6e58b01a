"""Capture on the in-memory ports, one poll or scan at a time: late commits, change
tracking and its expiry, the echoes of apply's own writes left unpublished, and
deletion scans that confirm and cap what they publish."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from tablesync import metrics
from tablesync.adapters.avro import Codec
from tablesync.adapters.memory import MemoryDatabase, MemorySingleton, memory_stores
from tablesync.adapters.memory.log import MemoryBroker
from tablesync.composition import topic_specs, topics_for
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import RecordChanged, Side, SnapshotRequested
from tablesync.core.records import Row, Update, Written
from tablesync.emulators.memory import MemorySide
from tablesync.ports.state import StateStores
from tablesync.runtime.capture import CaptureService, _TableState
from tablesync.settings import Settings, SyncSettings
from tests.faults.scope import MAPPINGS_DOCUMENT

TABLE: dict[Side, str] = {"bc": "customers", "dataverse": "accounts"}


@dataclass
class ManualClock:
    moment: datetime = datetime(2030, 1, 1, 12, tzinfo=UTC)
    ticks: float = 0.0

    def now(self) -> datetime:
        return self.moment

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)
        self.ticks += seconds


@dataclass
class Rig:
    side: Side
    clock: ManualClock
    api: MemorySide
    stores: StateStores
    broker: MemoryBroker
    capture: CaptureService
    codec: Codec = field(default_factory=Codec)
    state: _TableState | None = None
    started: Callable[[], Awaitable[CaptureService]] | None = None

    async def restart(self) -> None:
        """The capture stops (its lease released) and a new process starts."""
        assert self.started is not None
        await self.capture.lease._release()
        self.capture = await self.started()
        self.state = None

    @property
    def table(self) -> str:
        return TABLE[self.side]

    async def poll(self) -> None:
        if self.state is None:
            self.state = await self.capture._open(self.table)
        await self.capture._poll_once(self.table, self.state)

    def events(self) -> list[RecordChanged]:
        topic = self.capture.topics.cdc(self.side, self.table)
        found = []
        for record in self.broker.records(topic):
            event = self.codec.decode(record.value or b"")
            assert isinstance(event, RecordChanged)
            found.append(event)
        return found

    def upserts(self) -> list[tuple[str, str | None]]:
        return [(e.record_id, e.etag) for e in self.events() if e.op == "upsert"]

    def deletions(self) -> list[str]:
        return [e.record_id for e in self.events() if e.op == "delete"]

    def create(self, n: int, **overrides: Any) -> Row:
        if self.side == "bc":
            values: dict[str, Any] = {"number": f"C{n:05d}", "displayName": f"c{n}"}
            values["blocked"] = " "
        else:
            values = {"accountnumber": f"C{n:05d}", "name": f"c{n}", "statecode": 0}
            values["customertypecode"] = 3
        values.update(overrides)
        return self.api.user_create(self.table, values)

    def rename(self, row: Row, name: str, *, stamped: datetime | None = None) -> Row:
        field_name = "displayName" if self.side == "bc" else "name"
        return self.api.user_update(self.table, row.id, {field_name: name}, stamped=stamped)

    async def couple(self, rows: list[Row], mapping: str = "CUSTOMER") -> None:
        """Couples each row at its version, as apply's commit does after a write."""
        for n, row in enumerate(rows):
            here = Stamp(row.modified_at, row.etag)
            other = f"00000000-0000-0000-0000-{n:012d}"
            ids = {self.side: row.id, ("dataverse" if self.side == "bc" else "bc"): other}
            stamps: dict[Side, Stamp] = {"bc": here, "dataverse": here}
            await self.stores.couplings.couple(
                Coupling.between(mapping, ids, stamps, f"C{n:05d}"), None
            )
        # A scan looks at couplings made before it began.
        self.clock.advance(1)


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "poll_overlap_s": 1.0,
        "lookback_s": 600.0,
        "lookback_interval_s": 30.0,
        "reconcile_interval_s": 3600.0,
        "delete_scan_max_share": 0.05,
        "delete_scan_min_cap": 2,
    }
    values.update(overrides)
    return Settings(sync=SyncSettings(**values), topic_prefix="t.")


async def _rig(side: Side, document: dict[str, Any] | None = None, **overrides: Any) -> Rig:
    clock = ManualClock()
    settings = _settings(**overrides)
    database = MemoryDatabase(clock)
    stores = memory_stores(database)
    if document is None:
        mapping = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])
        document = {"mappings": {"CUSTOMER": mapping}}
    mappings = await stores.mappings.replace_all(document)
    topics = topics_for(settings)
    broker = MemoryBroker(clock=clock)
    broker.ensure_topics(topic_specs(topics, mappings))
    api = MemorySide(side, clock, page_size=4)

    async def started() -> CaptureService:
        capture = CaptureService(
            settings,
            side,
            stores=stores,
            api=api,
            publisher=broker.publisher(),
            consumers=broker.consumer,
            codec=Codec(),
            clock=clock,
            topics=topics,
            # Held for as long as any test's clock runs: its steps are run directly.
            singleton=MemorySingleton(database, f"capture.{side}", ttl_s=1e9),
        )
        assert await capture.lease._take(asyncio.Event(), None)
        return capture

    return Rig(side, clock, api, stores, broker, await started(), started=started)


@pytest.fixture
def halted() -> Any:
    def count(side: str, table: str, mapping: str) -> float:
        text = metrics.render(metrics.StateSnapshot(), process=False).decode()
        wanted = (
            f'tablesync_deletion_scan_halted_total{{mapping="{mapping}",side="{side}",'
            f'table="{table}"}}'
        )
        for line in text.splitlines():
            if line.startswith(wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    return count


# ------------------------------------------------------------ late commits


async def test_bc_a_late_commit_within_the_look_back_is_published_once() -> None:
    rig = await _rig("bc")
    await rig.poll()  # the first poll looks back, from the first checkpoint only
    rig.clock.advance(5)
    first = rig.create(1)
    await rig.poll()
    rig.clock.advance(60)
    later = rig.create(2)
    await rig.poll()
    assert rig.upserts() == [(first.id, first.etag), (later.id, later.etag)]

    # Committed now, stamped 40 s ago: behind the checkpoint and its overlap.
    rig.clock.advance(1)
    late = rig.rename(first, "late", stamped=rig.clock.now() - timedelta(seconds=40))
    await rig.poll()
    assert (first.id, late.etag) not in rig.upserts()
    rig.clock.advance(30)
    await rig.poll()
    rig.clock.advance(30)
    await rig.poll()

    assert rig.upserts()[2:] == [(first.id, late.etag)]
    assert late.modified_at < rig.state.watermark - timedelta(seconds=1)  # type: ignore[union-attr]


@pytest.mark.parametrize("lookback_s", [0.0, 0.5])
async def test_a_look_back_shorter_than_the_overlap_publishes_each_version_once(
    lookback_s: float,
) -> None:
    """Every poll re-reads the overlap behind the watermark: the versions it
    meets there are remembered as published for at least that long, or each
    poll publishes them again (a flood of repeats on every poll)."""
    rig = await _rig("bc", lookback_s=lookback_s, poll_overlap_s=1.0)
    await rig.poll()
    rig.clock.advance(2)
    older = rig.create(1)
    # Within the overlap of the newer row's stamp, and beyond the look-back.
    rig.clock.advance(0.7)
    newer = rig.create(2)
    for _ in range(5):
        await rig.poll()
        rig.clock.advance(0.1)

    assert rig.upserts() == [(older.id, older.etag), (newer.id, newer.etag)]


async def test_bc_a_commit_later_than_the_look_back_is_published_by_the_reconcile() -> None:
    rig = await _rig("bc", lookback_s=60.0, reconcile_interval_s=600.0)
    await rig.poll()  # the first reconcile takes note of every row
    rig.clock.advance(5)
    row = rig.create(1)
    await rig.poll()
    rig.clock.advance(120)
    rig.create(2)
    await rig.poll()

    late = rig.rename(row, "very late", stamped=rig.clock.now() - timedelta(minutes=10))
    for _ in range(12):
        rig.clock.advance(30)
        await rig.poll()
    before_reconcile = rig.upserts()
    rig.clock.advance(300)
    await rig.poll()

    assert (row.id, late.etag) not in before_reconcile
    assert rig.upserts()[len(before_reconcile) :] == [(row.id, late.etag)]
    rig.clock.advance(600)
    await rig.poll()
    assert rig.upserts().count((row.id, late.etag)) == 1


async def test_dataverse_a_late_commit_comes_through_change_tracking() -> None:
    rig = await _rig("dataverse")
    row = rig.create(1)
    await rig.poll()
    assert rig.state is not None and rig.state.tracking
    assert await rig.stores.checkpoints.delta_link("dataverse", "accounts") is not None
    rig.clock.advance(120)
    await rig.poll()

    late = rig.rename(row, "late", stamped=rig.clock.now() - timedelta(hours=1))
    await rig.poll()
    rig.clock.advance(1)
    await rig.poll()

    assert rig.upserts().count((row.id, late.etag)) == 1
    assert late.modified_at < rig.state.watermark - timedelta(minutes=30)


# ------------------------------------------------------------ change tracking


async def test_an_expired_delta_link_falls_back_and_recovers() -> None:
    rig = await _rig("dataverse", delete_scan_min_cap=10)
    rows = [rig.create(n) for n in range(3)]
    await rig.poll()
    await rig.couple(rows)
    expired = await rig.stores.checkpoints.delta_link("dataverse", "accounts")
    rig.clock.advance(10)
    changed = rig.rename(rows[0], "while away")
    rig.api.user_delete("accounts", rows[1].id)
    rig.api.expire_delta_links()

    with capture_logs() as logs:
        await rig.poll()

    assert [e["event"] for e in logs if e["event"].startswith("delta_link")] == [
        "delta_link_expired"
    ]
    assert (rows[0].id, changed.etag) in rig.upserts()
    fresh = await rig.stores.checkpoints.delta_link("dataverse", "accounts")
    assert fresh is not None and fresh != expired
    # The deletion fell between the links: the next scan looks for it, once.
    assert rig.deletions() == []
    await rig.capture._scan("accounts")
    await rig.capture._scan("accounts")
    assert rig.deletions() == [rows[1].id]
    assert "accounts" not in rig.capture._scan_due
    rig.clock.advance(5)
    again = rig.rename(rows[2], "after")
    await rig.poll()
    assert rig.upserts()[-1] == (rows[2].id, again.etag)


async def test_a_restart_with_no_delta_link_kept_scans_for_deletions_once() -> None:
    rig = await _rig("dataverse", delete_scan_min_cap=10)
    rows = [rig.create(n) for n in range(3)]
    await rig.poll()
    await rig.couple(rows)
    # Killed (or its lease lost) after it published and checkpointed the rows,
    # before it kept the link of that first read.
    await rig.stores.checkpoints.store_delta_link("dataverse", "accounts", None)
    rig.api.user_delete("accounts", rows[1].id)
    await rig.restart()

    await rig.poll()

    # A read for a new link lists no deletions: the next scan looks, once.
    assert rig.deletions() == []
    assert await rig.stores.checkpoints.delta_link("dataverse", "accounts") is not None
    assert "accounts" in rig.capture._scan_due
    await rig.capture._scan("accounts")
    await rig.capture._scan("accounts")
    assert rig.deletions() == [rows[1].id]
    assert "accounts" not in rig.capture._scan_due


async def test_deletions_come_through_change_tracking_once() -> None:
    rig = await _rig("dataverse")
    rows = [rig.create(n) for n in range(2)]
    await rig.poll()
    await rig.couple(rows)
    rig.api.user_delete("accounts", rows[0].id)

    await rig.poll()
    await rig.poll()

    assert rig.deletions() == [rows[0].id]
    assert rig.capture._tracked["accounts"] is True


async def test_a_dataverse_table_without_change_tracking_is_polled_by_stamp() -> None:
    rig = await _rig("dataverse")
    rig.api.untracked.add("accounts")
    await rig.poll()
    rig.clock.advance(5)
    row = rig.create(1)
    await rig.poll()

    assert rig.capture._tracked["accounts"] is False
    assert rig.upserts() == [(row.id, row.etag)]
    assert await rig.stores.checkpoints.delta_link("dataverse", "accounts") is None


# ------------------------------------------------------------ echoes


def _echoes_skipped(side: Side) -> float:
    text = metrics.render(metrics.StateSnapshot(), process=False).decode()
    wanted = f'tablesync_capture_echoes_skipped_total{{side="{side}",table="{TABLE[side]}"}}'
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _written(rig: Rig, row: Row, name: str) -> Row:
    """Apply's write to ``row``: the version it leaves, as the API answers it."""
    field_name = "displayName" if rig.side == "bc" else "name"
    [result] = await rig.api.write(rig.table, [Update(row.id, {field_name: name})])
    assert isinstance(result, Written) and result.row is not None
    return result.row


def _document_with_vendors() -> dict[str, Any]:
    """CUSTOMER and a VENDOR mapping reading Dataverse's accounts too."""
    customer = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])
    vendor = {
        "bc_table": "vendors",
        "dataverse_table": "accounts",
        "direction": "bidirectional",
        "integration_table_filter": "customertypecode eq 11",
        "bc_key": "number",
        "fields": [
            {"bc": "number", "dataverse": "accountnumber", "code": True, "max_length": 20},
            {"bc": "displayName", "dataverse": "name", "max_length": 100},
        ],
    }
    return {"mappings": {"VENDOR": vendor, "CUSTOMER": customer}}


async def test_the_echo_of_applys_own_write_is_not_published_and_a_later_edit_is() -> None:
    rig = await _rig("bc")
    await rig.poll()
    rig.clock.advance(5)
    row = rig.create(1)
    await rig.poll()
    rig.clock.advance(5)
    echo = await _written(rig, row, "from dataverse")
    await rig.couple([echo])
    before = _echoes_skipped("bc")

    with capture_logs() as logs:
        await rig.poll()

    assert rig.upserts() == [(row.id, row.etag)]
    [captured] = [e for e in logs if e["event"] == "changes_captured"]
    assert (captured["rows"], captured["echoes"]) == (0, 1)
    assert _echoes_skipped("bc") == before + 1
    assert rig.capture.echoes == 1
    # Read all the same: the checkpoint moves past it, and the polls that read
    # it again within the overlap do not look it up again.
    assert rig.state is not None and rig.state.watermark == echo.modified_at
    assert await rig.stores.checkpoints.watermark("bc", "customers") == echo.modified_at
    looked_up: list[list[str]] = []
    by_ids = rig.stores.couplings.by_ids

    async def counted(mapping: str, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        looked_up.append(list(ids))
        return await by_ids(mapping, side, ids)

    rig.stores.couplings.by_ids = counted  # type: ignore[method-assign]
    for _ in range(3):
        rig.clock.advance(0.2)
        await rig.poll()
    assert looked_up == []
    assert rig.capture.echoes == 1

    rig.clock.advance(5)
    edit = rig.rename(echo, "a user's edit")
    await rig.poll()
    await rig.poll()
    assert rig.upserts() == [(row.id, row.etag), (row.id, edit.etag)]


async def test_an_echo_through_change_tracking_is_not_published() -> None:
    rig = await _rig("dataverse")
    row = rig.create(1)
    await rig.poll()
    rig.clock.advance(5)
    echo = await _written(rig, row, "from bc")
    await rig.couple([echo])

    with capture_logs() as logs:
        await rig.poll()
    rig.clock.advance(5)
    edit = rig.rename(echo, "a user's edit")
    await rig.poll()

    assert rig.upserts() == [(row.id, row.etag), (row.id, edit.etag)]
    assert [(e["tracked"], e["rows"], e["echoes"]) for e in logs] == [(True, 0, 1)]


async def test_a_row_one_mapping_reading_its_table_has_not_coupled_is_published() -> None:
    rig = await _rig("dataverse", _document_with_vendors())
    both, customer_only = rig.create(1), rig.create(2)
    await rig.poll()
    rig.clock.advance(5)
    echoes = [await _written(rig, r, f"written {n}") for n, r in enumerate((both, customer_only))]
    await rig.couple(echoes)
    await rig.couple(echoes[:1], mapping="VENDOR")

    await rig.poll()

    assert rig.upserts() == [
        (both.id, both.etag),
        (customer_only.id, customer_only.etag),
        (customer_only.id, echoes[1].etag),
    ]


async def test_a_mapping_loaded_since_capture_started_is_asked_too() -> None:
    rig = await _rig("dataverse")
    row = rig.create(1)
    await rig.poll()
    rig.clock.advance(5)
    first = await _written(rig, row, "from bc")
    await rig.couple([first])
    await rig.poll()
    # VENDOR reads accounts from now on, and has not coupled the row.
    await rig.stores.mappings.replace_all(_document_with_vendors())
    rig.clock.advance(5)
    second = await _written(rig, first, "from bc again")
    await rig.couple([second])

    await rig.poll()

    assert rig.upserts() == [(row.id, row.etag), (row.id, second.etag)]


async def test_a_snapshot_publishes_the_rows_whose_echo_capture_left_out() -> None:
    rig = await _rig("bc")
    await rig.poll()
    rig.clock.advance(5)
    row = rig.create(1)
    await rig.poll()
    rig.clock.advance(5)
    echo = await _written(rig, row, "from dataverse")
    await rig.couple([echo])
    await rig.poll()

    request = SnapshotRequested(
        job_id="6c1d3f8e-0000-4000-8000-000000000001",
        mapping="CUSTOMER",
        side="bc",
        table="customers",
        kind="full",
        requested_at=rig.clock.now(),
    )
    await rig.capture._serve(rig.codec.encode(request))

    changes = []
    for record in rig.broker.records(rig.capture.topics.cdc("bc", "customers")):
        event = rig.codec.decode(record.value or b"")
        if isinstance(event, RecordChanged):
            changes.append((event.record_id, event.etag, event.snapshot_job_id))
    assert changes == [(row.id, row.etag, None), (row.id, echo.etag, request.job_id)]


async def test_with_the_setting_off_echoes_are_published() -> None:
    for skips in (True, False):
        rig = await _rig("bc", capture_skips_echoes=skips)
        await rig.poll()
        rig.clock.advance(5)
        row = rig.create(1)
        await rig.poll()
        rig.clock.advance(5)
        echo = await _written(rig, row, "from dataverse")
        await rig.couple([echo])
        await rig.poll()

        expected = [(row.id, row.etag)] if skips else [(row.id, row.etag), (row.id, echo.etag)]
        assert rig.upserts() == expected
        assert rig.capture.echoes == (1 if skips else 0)


# ------------------------------------------------------------ deletion scans


async def test_a_confirmed_deletion_is_published_once() -> None:
    rig = await _rig("bc")
    rows = [rig.create(n) for n in range(4)]
    await rig.couple(rows)
    rig.api.user_delete("customers", rows[2].id)

    await rig.capture._scan("customers")
    await rig.capture._scan("customers")

    assert rig.deletions() == [rows[2].id]


async def test_a_short_read_during_a_deletion_scan_deletes_nothing_and_raises_the_alert(
    halted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig("bc")
    rows = [rig.create(n) for n in range(40)]
    await rig.couple(rows)
    listed = sorted(r.id for r in rows)[:20]

    async def short(entity_set: str) -> AsyncIterator[list[str]]:
        # The listing stops half-way (a permission, a wrong company, a fault).
        yield listed

    monkeypatch.setattr(rig.api, "read_ids", short)
    before = halted("bc", "customers", "CUSTOMER")
    with capture_logs() as logs:
        await rig.capture._scan("customers")

    assert rig.deletions() == []
    [error] = [e for e in logs if e["event"] == "deletion_scan_halted"]
    assert error["log_level"] == "error"
    assert (error["mapping"], error["vanished"], error["coupled"]) == ("CUSTOMER", 20, 40)
    assert halted("bc", "customers", "CUSTOMER") == before + 1


async def test_a_short_read_within_the_cap_is_caught_by_the_direct_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = await _rig("bc")
    rows = [rig.create(n) for n in range(40)]
    await rig.couple(rows)
    listed = sorted(r.id for r in rows)[1:]
    rig.api.user_delete("customers", rows[5].id)

    async def short(entity_set: str) -> AsyncIterator[list[str]]:
        yield [i for i in listed if i != rows[5].id]

    monkeypatch.setattr(rig.api, "read_ids", short)
    with capture_logs() as logs:
        await rig.capture._scan("customers")

    assert rig.deletions() == [rows[5].id]
    [warning] = [e for e in logs if e["event"] == "deletion_scan_unconfirmed"]
    assert warning["records"] == 1
