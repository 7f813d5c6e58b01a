"""The application layer's checks, on the real PostgreSQL (``postgres_stores``)
and both emulators: what each operation refuses, with which error and what
that error names, and that a refusal changes nothing. The services are not
running: nothing here needs them, and nothing consumes the runs requested."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres import postgres_stores
from tablesync.application import Operator
from tablesync.composition import SideApis, build_operator
from tablesync.core.events import Side
from tablesync.core.stored import Selection
from tablesync.errors import (
    AlreadyCoupled,
    AlreadyRunning,
    CommandRefused,
    InvalidRequest,
    MappingError,
    NotCoupled,
    NotFound,
    RecordNotFound,
    UnknownMapping,
)
from tablesync.ports.api import SideApi
from tablesync.ports.clock import SystemClock
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(idle_stack: Stack) -> Stack:
    return idle_stack


async def _count(stack: Stack, table: str) -> int:
    value: int = await stack.pool.fetchval(f"SELECT count(*) FROM {table}")
    return value


async def test_couple_reads_both_records_sets_the_bc_key_and_refuses_a_taken_record(
    stack: Stack, operator: Operator
) -> None:
    customers = await stack.bc_rows("customers")
    accounts = await stack.dv_rows("accounts")
    bc_1, bc_2 = customers[0]["id"], customers[1]["id"]
    dv_1, dv_2 = accounts[0]["accountid"], accounts[1]["accountid"]
    ghost = str(uuid.uuid4())

    with pytest.raises(UnknownMapping, match=r"unknown mapping 'NOPE' \(known: CURRENCY, "):
        await operator.couple("NOPE", bc_1, dv_1)
    with pytest.raises(RecordNotFound) as missing:
        await operator.couple("CUSTOMER", ghost, dv_1)
    assert (missing.value.side, missing.value.table, missing.value.record_id) == (
        "bc",
        "customers",
        ghost,
    )
    assert str(missing.value) == f"bc has no customers record {ghost}"
    with pytest.raises(RecordNotFound, match=f"dataverse has no accounts record {ghost}"):
        await operator.couple("CUSTOMER", bc_1, ghost)
    with pytest.raises(InvalidRequest, match="bc id 'C00010' is not a GUID"):
        await operator.couple("CUSTOMER", "C00010", dv_1)
    assert await _count(stack, "couplings") == 0

    # Ids in capitals are the same records: stored as the sides key them.
    row = await operator.couple("CUSTOMER", bc_1.upper(), dv_1)
    assert (row.coupling.bc_id, row.coupling.dv_id) == (bc_1, dv_1)
    assert row.coupling.bc_key == customers[0]["number"]
    assert row.coupling.bc_stamp.modified_at is None, "unsynced: the next change syncs"

    with pytest.raises(AlreadyCoupled) as taken:
        await operator.couple("CUSTOMER", bc_1, dv_2)
    assert str(taken.value) == (
        f"CUSTOMER: bc record {bc_1} is already coupled to dataverse record {dv_1}; "
        "uncouple it first"
    )
    assert isinstance(taken.value, CommandRefused)
    with pytest.raises(AlreadyCoupled, match=f"dataverse record {dv_1} is already coupled"):
        await operator.couple("CUSTOMER", bc_2, dv_1)
    again = await operator.couple("CUSTOMER", bc_1, dv_1)
    assert again.coupling.dv_id == dv_1
    assert await stack.couplings("CUSTOMER") == {bc_1: dv_1}


async def test_uncouple_names_what_is_not_coupled_and_logs_an_uncoupling_job(
    stack: Stack, operator: Operator
) -> None:
    bc_id = (await stack.bc_rows("customers"))[0]["id"]
    dv_id = (await stack.dv_rows("accounts"))[0]["accountid"]
    await operator.couple("CUSTOMER", bc_id, dv_id)

    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.uncouple("NOPE", "bc", bc_id)
    with pytest.raises(InvalidRequest, match="side 'sap'"):
        await operator.uncouple("CUSTOMER", "sap", bc_id)
    with pytest.raises(NotCoupled) as absent:
        await operator.uncouple("VENDOR", "bc", bc_id)
    assert str(absent.value) == f"VENDOR: bc record {bc_id} is not coupled"
    assert absent.value.what == "coupling"
    assert await _count(stack, "jobs") == 0, "a refused uncouple leaves no job behind"

    removed = await operator.uncouple("CUSTOMER", "dataverse", dv_id)
    assert (removed.bc_id, removed.dv_id) == (bc_id, dv_id)
    assert await stack.couplings("CUSTOMER") == {}
    [job] = await operator.jobs(mapping="CUSTOMER")
    assert (job.type, job.kind, job.status) == ("uncoupling", "uncouple", "finished")
    assert job.counts["uncoupled"] == 1
    # The record log tells it, in that job, by either record's id.
    [entry] = await operator.record_log("CUSTOMER", "bc", bc_id)
    assert (entry.job_id, entry.decision, entry.source_side, entry.source_id) == (
        job.job_id,
        ("uncoupled",),
        "dataverse",
        dv_id,
    )
    assert (entry.counterpart_id, entry.direction, entry.fields) == (bc_id, None, ())
    assert await operator.record_log("CUSTOMER", "dataverse", dv_id) == [entry]
    with pytest.raises(NotCoupled):
        await operator.uncouple("CUSTOMER", "bc", bc_id)


async def test_mapping_changes_are_checked_and_a_refused_one_stores_nothing(
    stack: Stack, operator: Operator
) -> None:
    before = await operator.mapping("CUSTOMER")
    with pytest.raises(InvalidRequest, match="nothing to change: give one of direction"):
        await operator.change_mapping("CUSTOMER")
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.change_mapping("NOPE", direction="bidirectional")
    with pytest.raises(MappingError, match=r"invalid change of CUSTOMER: .*position 7"):
        await operator.change_mapping("CUSTOMER", table_filter="city eq")
    with pytest.raises(MappingError, match=r"invalid change of CUSTOMER: .*direction"):
        await operator.change_mapping("CUSTOMER", direction="sideways")
    assert await operator.mapping("CUSTOMER") == before

    changed = await operator.change_mapping("CUSTOMER", sync_only_coupled=False)
    assert changed.sync_only_coupled is False
    assert (await operator.mapping("CUSTOMER")).sync_only_coupled is False


async def test_runs_name_unknown_mappings_and_a_second_full_sync_names_the_first(
    stack: Stack, operator: Operator
) -> None:
    with pytest.raises(UnknownMapping, match=r"unknown mappings 'NOPE', 'ZIP' \(known: "):
        await operator.full_sync(mappings=["CUSTOMER", "NOPE", "ZIP"])
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.sync_modified(mapping="NOPE")
    assert await _count(stack, "runs") == 0, "a refused request records no run"

    first = await operator.full_sync(mappings=["CURRENCY"])
    with pytest.raises(AlreadyRunning) as refused:
        await operator.full_sync()
    assert refused.value.run_id == first and first in str(refused.value)
    assert [r.run_id for r in await operator.runs()] == [first]
    progress = await operator.progress(first.upper())
    assert progress.run.status == "requested" and progress.run.mappings == ["CURRENCY"]

    ghost = str(uuid.uuid4())
    with pytest.raises(NotFound, match=f"no run {ghost}") as absent:
        await operator.progress(ghost)
    assert absent.value.what == "run"
    with pytest.raises(NotFound, match=f"no run {ghost}"):
        await operator.wait(ghost, timeout_s=5)
    with pytest.raises(NotFound, match=f"no job {ghost}"):
        await operator.job(ghost)
    with pytest.raises(NotFound, match=f"no job {ghost}"):
        await operator.job_errors(job_id=ghost)
    with pytest.raises(InvalidRequest, match="job id 'abc' is not a GUID"):
        await operator.job_errors(job_id="abc")


async def test_recovery_actions_say_which_records_and_check_what_they_name(
    stack: Stack, operator: Operator
) -> None:
    with pytest.raises(InvalidRequest, match="say which records"):
        await operator.retry(Selection())
    with pytest.raises(InvalidRequest, match="say which records"):
        await operator.delete_couplings(Selection(skipped_only=True))
    with pytest.raises(InvalidRequest, match="record id 'C00010' is not a GUID"):
        await operator.restore(Selection(record_ids=("C00010",)))
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.delete_couplings(Selection(mapping="NOPE"))
    with pytest.raises(CommandRefused, match="confirm it"):
        await operator.delete_records(Selection(everything=True), confirmed=False)
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.find_deleted("NOPE")
    now = SystemClock().now()
    with pytest.raises(InvalidRequest, match="the window ends"):
        await operator.replay("CUSTOMER", since=now, until=now - timedelta(minutes=1))
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.replay("NOPE", since=now)
    with pytest.raises(UnknownMapping, match="'NOPE'"):
        await operator.dry_run(mappings=["NOPE"])
    assert await _count(stack, "jobs") == 0

    result = await operator.delete_couplings(Selection(mapping="CUSTOMER"))
    assert (result.records, dict(result.counts)) == (0, {})


async def test_with_no_mappings_loaded_every_operation_is_refused_with_the_reason(
    stack: Stack, operator: Operator
) -> None:
    await stack.pool.execute("DELETE FROM mappings")
    reason = "no mappings are loaded: run `tablesync mappings load` first"
    bc_id, dv_id = str(uuid.uuid4()), str(uuid.uuid4())
    for attempt in (
        operator.mappings(),
        operator.full_sync(),
        operator.couple("CUSTOMER", bc_id, dv_id),
        operator.uncouple("CUSTOMER", "bc", bc_id),
        operator.change_mapping("CUSTOMER", direction="bidirectional"),
    ):
        with pytest.raises(CommandRefused) as refused:
            await attempt
        assert str(refused.value) == reason


async def test_only_commands_that_touch_a_side_open_its_api(stack: Stack) -> None:
    opened: list[Side] = []
    real = SideApis(stack.settings)

    async def apis(side: Side) -> SideApi:
        opened.append(side)
        return await real(side)

    async with KafkaPublisher(KafkaConnection.from_settings(stack.settings)) as publisher:
        operator = build_operator(
            stack.settings, postgres_stores(stack.pool), apis=apis, publisher=publisher
        )
        try:
            await operator.full_sync(mappings=["CURRENCY"])
            await operator.change_mapping("VENDOR", sync_only_coupled=False)
            with pytest.raises(NotCoupled):
                await operator.uncouple("VENDOR", "bc", str(uuid.uuid4()))
            await operator.delete_couplings(Selection(mapping="VENDOR"))
            assert opened == []
            with pytest.raises(RecordNotFound):
                await operator.couple("VENDOR", str(uuid.uuid4()), str(uuid.uuid4()))
            assert opened == ["bc"]
        finally:
            await real.aclose()
