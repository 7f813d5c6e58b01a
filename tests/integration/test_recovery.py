"""Recovery and foresight on the real Kafka, PostgreSQL and both emulators:
automatic retries, the errors list and its actions, the dry run of a full
synchronization, and the replay of a time window."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import yaml

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres import postgres_stores
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.problems import ProblemStore, Selection
from tablesync.application import Operator
from tablesync.application.dryrun import DirectionPreview
from tablesync.composition import SideApis, build_operator, topics_for
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations, RunProgress
from tablesync.settings import SyncSettings
from tests.conftest import InfraEndpoints
from tests.integration.stack import DEFAULT_MAPPINGS, Stack, open_stack, wait_for

pytestmark = pytest.mark.integration
CODEC = Codec()
SYNC = SyncSettings(
    poll_interval_s=0.2,
    partitions=3,
    delete_scan_interval_s=1.0,
    retry_backoff_s=0.3,
    retry_backoff_max_s=1.0,
    skip_after_failures=2,
    # No look-back: the dry-run test moves capture's checkpoints past its
    # changes to keep them for the full sync it compares with.
    lookback_s=0.0,
)


@pytest.fixture
async def stack(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Stack]:
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers,
        state_dsn=state_dsn,
        topic_prefix=topic_prefix,
        sync=SYNC,
    ) as s:
        yield s


@pytest.fixture
async def publisher(stack: Stack) -> AsyncIterator[KafkaPublisher]:
    async with KafkaPublisher(KafkaConnection.from_settings(stack.settings)) as p:
        yield p


@pytest.fixture
def ops(stack: Stack, publisher: KafkaPublisher) -> Operations:
    return Operations(
        JobStore(stack.pool), publisher, CODEC, topics_for(stack.settings), SystemClock()
    )


@pytest.fixture
async def operator(stack: Stack, publisher: KafkaPublisher) -> AsyncIterator[Operator]:
    """The operator's operations, as the CLI and the admin API call them."""
    apis = SideApis(stack.settings)
    try:
        yield build_operator(
            stack.settings, postgres_stores(stack.pool), apis=apis, publisher=publisher, codec=CODEC
        )
    finally:
        await apis.aclose()


async def _full_sync(ops: Operations, **kwargs: Any) -> RunProgress:
    progress = await ops.wait(await ops.full_sync(**kwargs), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    return progress


async def _status(stack: Stack, mapping: str, source_id: str) -> str | None:
    value: str | None = await stack.pool.fetchval(
        "SELECT status FROM record_status WHERE mapping = $1 AND source_id = $2",
        mapping,
        source_id,
    )
    return value


# Automatic retries


async def test_a_contact_waiting_for_its_parent_applies_once_the_parent_couples(
    stack: Stack, ops: Operations
) -> None:
    await stack.start()
    await _full_sync(ops)
    await stack.set_mapping("CONTACTS", sync_only_coupled=False)
    account = await stack.dv_post(
        "accounts", {"name": "Proseware", "accountnumber": "PW-1", "customertypecode": 3}
    )
    contact = await stack.dv_post(
        "contacts",
        {
            "firstname": "Kim",
            "lastname": "Abercrombie",
            "emailaddress1": "kim@proseware.example",
            "parentcustomerid_account@odata.bind": f"/accounts({account['accountid']})",
        },
    )

    async def pending() -> bool:
        return await _status(stack, "CONTACTS", contact["contactid"]) == "pending"

    await wait_for(pending, what="the contact to wait for its parent account")
    # The account couples (a full sync of CUSTOMER creates its BC customer);
    # nobody touches the contact.
    await _full_sync(ops, mappings=["CUSTOMER"])

    async def coupled() -> str | None:
        return next(
            (
                bc
                for bc, dv in (await stack.couplings("CONTACTS")).items()
                if dv == contact["contactid"]
            ),
            None,
        )

    bc_id = await wait_for(coupled, what="the contact to apply by itself")
    bc = (await stack.bc_rows("contacts", f"?$filter=id eq {bc_id}"))[0]
    assert bc["companyNumber"] == "PW-1"
    assert await _status(stack, "CONTACTS", contact["contactid"]) is None


async def test_a_repeating_failure_becomes_skipped_and_retry_syncs_it(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    twin = await stack.dv_post(
        "accounts", {"name": "Vendor twin", "accountnumber": "C90009", "customertypecode": 11}
    )
    await stack.start()
    await _full_sync(ops)
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    customer = await stack.bc_post("customers", {"displayName": "Twin Co", "number": "C90009"})

    async def skipped() -> bool:
        return await _status(stack, "CUSTOMER", customer["id"]) == "skipped"

    await wait_for(skipped, what="the repeated failure to become skipped")
    problems = await ProblemStore(stack.pool).records(Selection(mapping="CUSTOMER"))
    listed = next(p for p in problems if p.source_id == customer["id"])
    assert listed.same_failures >= 2 and listed.status == "skipped"
    # The cause goes away; a skipped record is not retried by itself…
    await stack.dv_patch("accounts", twin["accountid"], {"accountnumber": "V-TWIN"})
    assert customer["id"] not in await stack.couplings("CUSTOMER")
    # …until the operator says retry.
    result = await operator.retry(Selection(record_ids=(customer["id"],)))
    assert result.counts["inserted"] == 1, result.as_dict()
    assert customer["id"] in await stack.couplings("CUSTOMER")
    assert await _status(stack, "CUSTOMER", customer["id"]) is None
    job = await stack.pool.fetchrow(
        "SELECT type, kind FROM jobs WHERE job_id = $1::uuid", result.jobs[0]
    )
    assert (job["type"], job["kind"]) == ("synchronization", "retry")


# Actions on deleted records and couplings


async def test_restore_recreates_a_deleted_dataverse_account(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    await stack.start()
    await _full_sync(ops)
    bc_id, dv_id = sorted((await stack.couplings("CUSTOMER")).items())[0]
    customer = (await stack.bc_rows("customers", f"?$filter=id eq {bc_id}"))[0]
    deleted = await stack.dv.delete(f"/api/data/v9.2/accounts({dv_id})")
    assert deleted.status_code == 204

    async def flagged() -> bool:
        return await _status(stack, "CUSTOMER", dv_id) == "skipped"

    await wait_for(flagged, what="the deletion to be noticed and listed")
    result = await operator.restore(Selection(record_ids=(dv_id,)))
    assert result.counts["inserted"] == 1, result.as_dict()
    new_id = (await stack.couplings("CUSTOMER"))[bc_id]
    assert new_id != dv_id
    account = (await stack.dv_rows("accounts", f"?$filter=accountid eq {new_id}"))[0]
    assert account["name"] == customer["displayName"]
    assert account["accountnumber"] == customer["number"]
    assert await _status(stack, "CUSTOMER", dv_id) is None


async def test_delete_couplings_then_a_sync_creates_new_counterparts(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    await stack.start()
    await _full_sync(ops)
    before = await stack.couplings("CONTACTS")
    dv_contacts = len(await stack.dv_rows("contacts"))
    result = await operator.delete_couplings(Selection(mapping="CONTACTS"))
    assert result.counts["uncoupled"] == len(before) > 0
    assert await stack.couplings("CONTACTS") == {}
    job = await stack.pool.fetchval("SELECT type FROM jobs WHERE job_id = $1::uuid", result.jobs[0])
    assert job == "uncoupling"
    progress = await _full_sync(ops, mappings=["CONTACTS"])
    created = next(j for j in progress.jobs if j.direction == "to_integration")
    assert created.counts["inserted"] == len(before)
    assert len(await stack.dv_rows("contacts")) == dv_contacts + len(before)
    assert set(await stack.couplings("CONTACTS")) >= set(before)


async def test_find_deleted_flags_a_coupling_whose_record_vanished(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    await stack.start()
    await _full_sync(ops)
    await stack.stop()
    bc_id, _ = sorted((await stack.couplings("VENDOR")).items())[0]
    response = await stack.bc.delete(stack.bc_path("vendors", bc_id), headers={"If-Match": "*"})
    assert response.status_code == 204
    result = await operator.find_deleted("VENDOR")
    assert result.counts["deleted"] == 1
    flagged = await stack.pool.fetchval(
        "SELECT bc_deleted FROM couplings WHERE mapping = 'VENDOR' AND bc_id = $1::uuid", bc_id
    )
    assert flagged is True
    assert await _status(stack, "VENDOR", bc_id) == "skipped"


# The dry run


async def _etags(stack: Stack) -> set[str]:
    tags = set()
    for table in ("accounts", "contacts", "transactioncurrencies", "systemusers"):
        tags |= {r["@odata.etag"] for r in await stack.dv_rows(table)}
    for table in ("customers", "vendors", "contacts", "salespeople", "currencies"):
        tags |= {r["@odata.etag"] for r in await stack.bc_rows(table)}
    return tags


def _compare(previews: list[DirectionPreview], progress: RunProgress) -> None:
    real = {
        (j.mapping, j.direction): {k: v for k, v in j.counts.items() if v} for j in progress.jobs
    }
    predicted = {
        (p.mapping, p.direction): {k: v for k, v in p.counts.items() if v} for p in previews
    }
    assert predicted == real


async def test_the_dry_run_predicts_the_full_sync_of_the_demo_data(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    before = await _etags(stack)
    couplings_before = await stack.pool.fetchval("SELECT count(*) FROM couplings")
    previews = await operator.dry_run()
    assert await _etags(stack) == before, "the dry run wrote to a side"
    assert await stack.pool.fetchval("SELECT count(*) FROM couplings") == couplings_before
    assert sum(p.counts["inserted"] for p in previews) > 0
    await stack.start()
    _compare(previews, await _full_sync(ops))


async def test_the_dry_run_predicts_conflicts_filters_and_missing_lookups(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    await _patch_conflict_policy(stack, "CUSTOMER", "none")
    await stack.start()
    await _full_sync(ops)
    await stack.stop()
    couplings = sorted((await stack.couplings("CUSTOMER")).items())
    # Both sides changed: a conflict under policy none.
    (bc_1, dv_1), (bc_2, _dv_2) = couplings[0], couplings[1]
    await stack.bc_patch("customers", bc_1, {"city": "Bruges"})
    await stack.dv_patch("accounts", dv_1, {"address1_city": "Ghent"})
    # One side changed: an update.
    await stack.bc_patch("customers", bc_2, {"phoneNumber": "+32 50 00 00 00"})
    # Outside the filter: a blocked customer.
    await stack.bc_post(
        "customers", {"displayName": "Blocked Ltd", "number": "C90100", "blocked": "All"}
    )
    # A lookup nobody can resolve: a salesperson no Dataverse user matches.
    person = await stack.bc_post("salespeople", {"name": "Nobody", "email": "nobody@x.example"})
    await stack.bc_post(
        "customers",
        {"displayName": "Lonely Ltd", "number": "C90101", "salespersonCode": person["code"]},
    )
    # A new customer: a create.
    await stack.bc_post("customers", {"displayName": "Fresh Ltd", "number": "C90102"})
    # Continuous capture must not take these first: the full sync is the one to
    # compare. Capture re-reads an overlap behind its checkpoint, so the
    # checkpoint goes past the changes by more than that; Dataverse's delta
    # links would serve them whatever the watermark, so they go, and capture
    # takes new ones from the rows stamped after the watermark.
    await stack.pool.execute(
        "UPDATE capture_checkpoints SET delta_link = NULL,"
        " watermark = now() + make_interval(secs => $1)",
        stack.settings.sync.poll_overlap_s + 0.5,
    )
    before = await _etags(stack)
    previews = await operator.dry_run()
    assert await _etags(stack) == before
    customer = next(
        p for p in previews if (p.mapping, p.direction) == ("CUSTOMER", "to_integration")
    )
    assert customer.conflicts == 1 and customer.counts["skipped"] == 1
    assert customer.filtered >= 2
    assert customer.counts["pending"] == 1 and customer.counts["inserted"] == 1
    assert customer.counts["modified"] == 1
    assert customer.examples["pending"][0]["message"]
    await stack.start()
    _compare(previews, await _full_sync(ops))


async def _patch_conflict_policy(stack: Stack, mapping: str, policy: str) -> None:
    document = yaml.safe_load(DEFAULT_MAPPINGS.read_text())
    changed = copy.deepcopy(document)
    changed["mappings"][mapping]["update_conflict"] = policy
    await MappingStore(stack.pool).replace_all(changed)


# Replay


async def test_replay_corrects_exactly_the_window_and_a_second_replay_changes_nothing(
    stack: Stack, ops: Operations, operator: Operator
) -> None:
    document = yaml.safe_load(DEFAULT_MAPPINGS.read_text())
    broken = copy.deepcopy(document)
    # A mapping mistake: BC's city lands in Dataverse's state field.
    for f in broken["mappings"]["CUSTOMER"]["fields"]:
        if f.get("bc") == "city":
            f["dataverse"] = "address1_stateorprovince"
        elif f.get("bc") == "state":
            f["dataverse"] = "address1_city"
    await MappingStore(stack.pool).replace_all(broken)
    await stack.start()
    await _full_sync(ops)
    couplings = sorted((await stack.couplings("CUSTOMER")).items())
    window_start = SystemClock().now()
    changed = couplings[:2]
    for i, (bc_id, _) in enumerate(changed):
        await stack.bc_patch("customers", bc_id, {"city": f"Window {i}"})

    async def arrived() -> bool:
        rows = {r["accountid"]: r for r in await stack.dv_rows("accounts")}
        return all(
            rows[dv]["address1_stateorprovince"] == f"Window {i}"
            for i, (_, dv) in enumerate(changed)
        )

    await wait_for(arrived, what="the changes (mapped wrongly) to arrive")
    window_end = SystemClock().now() + timedelta(seconds=1)
    await stack.stop()
    untouched = {
        r["accountid"]: r["versionnumber"]
        for r in await stack.dv_rows("accounts")
        if r["accountid"] not in {dv for _, dv in changed}
    }
    await MappingStore(stack.pool).replace_all(document)  # the fix

    async def run_replay() -> dict[str, int]:
        result = await operator.replay("CUSTOMER", since=window_start, until=window_end)
        assert result.events >= len(changed)
        return result.counts

    first = await run_replay()
    assert first["modified"] == len(changed), first
    rows = {r["accountid"]: r for r in await stack.dv_rows("accounts")}
    for i, (_, dv) in enumerate(changed):
        assert rows[dv]["address1_city"] == f"Window {i}"
    assert {k: rows[k]["versionnumber"] for k in untouched} == untouched
    second = await run_replay()
    assert second.get("modified", 0) == 0 and second.get("inserted", 0) == 0, second
