"""DESIGN.md's invariants, each a test on the real Kafka, PostgreSQL and both
API emulators. Echo, dependencies and conflicts are in test_engine.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher, Message
from tablesync.adapters.postgres.apply_state import ApplyStateStore, Intent
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.composition import topics_for
from tablesync.core.events import FieldValue, RecordChanged
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations
from tests.conftest import InfraEndpoints
from tests.integration.stack import DEFAULT_MAPPINGS, Stack, open_stack, wait_applied, wait_for

pytestmark = pytest.mark.integration
CODEC = Codec()


@pytest.fixture
async def stack(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Stack]:
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as s:
        yield s


@pytest.fixture
async def publisher(stack: Stack) -> AsyncIterator[KafkaPublisher]:
    p = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
def ops(stack: Stack, publisher: KafkaPublisher) -> Operations:
    return Operations(
        JobStore(stack.pool), publisher, CODEC, topics_for(stack.settings), SystemClock()
    )


async def _full_sync(ops: Operations, **kwargs: Any) -> None:
    progress = await ops.wait(await ops.full_sync(**kwargs), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message


async def _applied_everything(stack: Stack) -> bool:
    """Every event published so far on the change topics has been applied."""
    publisher = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
    await publisher.start()
    try:
        ends: dict[tuple[str, int], int] = {}
        topics = topics_for(stack.settings)
        for side in ("bc", "dataverse"):
            for table in await _tables(stack, side):
                topic = topics.cdc(side, table)
                for p in await publisher.partitions_for(topic):
                    ends[(topic, p)] = await _end_offset(stack, topic, p)
    finally:
        await publisher.stop()
    rows = await stack.pool.fetch(
        "SELECT mapping, topic, partition, next_offset FROM apply_positions"
    )
    reached: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["topic"], r["partition"])
        reached[key] = min(reached.get(key, r["next_offset"]), r["next_offset"])
    return all(reached.get(k, 0) >= end for k, end in ends.items() if end > 0)


async def _tables(stack: Stack, side: str) -> list[str]:
    rows = await stack.pool.fetch("SELECT definition FROM mappings")
    key = "bc_table" if side == "bc" else "dataverse_table"
    return sorted({r["definition"][key] for r in rows})


async def _end_offset(stack: Stack, topic: str, partition: int) -> int:
    from aiokafka import TopicPartition  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        ends = await consumer.end_offsets([tp])
        return int(ends[tp])
    finally:
        await consumer.stop()


# 1. Nothing lost


async def test_nothing_is_lost_across_restarts_of_the_services(
    stack: Stack, ops: Operations
) -> None:
    await stack.start()
    await _full_sync(ops)
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    created: list[dict[str, Any]] = []
    for round_ in range(3):
        for i in range(5):
            created.append(
                await stack.bc_post(
                    "customers",
                    {
                        "displayName": f"Restart {round_}-{i}",
                        "number": f"R{round_}{i:03d}",
                        "city": f"City {i}",
                    },
                )
            )
        # Stop while some of those changes are in flight, change more while
        # nothing runs, start again.
        await stack.stop()
        customer = created[round_ * 5]
        await stack.bc_patch("customers", customer["id"], {"city": f"Changed {round_}"})
        customer["city"] = f"Changed {round_}"
        await stack.start()

    async def all_synced() -> bool:
        couplings = await stack.couplings("CUSTOMER")
        if not all(c["id"] in couplings for c in created):
            return False
        accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
        return all(
            accounts[couplings[c["id"]]]["address1_city"] == c["city"]
            and accounts[couplings[c["id"]]]["name"] == c["displayName"]
            for c in created
        )

    await wait_for(all_synced, timeout_s=120, what="every change made across restarts to arrive")


# 2. Idempotent


async def test_replaying_every_event_changes_nothing_and_counts_unchanged(
    stack: Stack, ops: Operations
) -> None:
    await stack.start()
    await _full_sync(ops)
    await wait_for(lambda: _applied_everything(stack), what="the pipeline to be idle")
    await stack.stop()
    dv_before = await _snapshot(stack)
    replayed_from = await stack.pool.fetchval("SELECT sum(next_offset) FROM apply_positions")
    assert replayed_from > 0
    continuous_before = await _continuous_counts(stack)
    # Forget every position: apply starts again from the first event of every topic.
    await stack.pool.execute("UPDATE apply_positions SET next_offset = 0")
    await stack.start()
    await wait_for(lambda: _applied_everything(stack), timeout_s=60, what="the replay to finish")
    assert await _snapshot(stack) == dv_before
    after = await _continuous_counts(stack)
    grown = {k: after.get(k, 0) - continuous_before.get(k, 0) for k in after}
    assert grown.get("unchanged", 0) > 0
    assert {k: v for k, v in grown.items() if v and k not in ("unchanged", "pending")} == {}


async def _snapshot(stack: Stack) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for table in ("accounts", "contacts", "transactioncurrencies"):
        for row in await stack.dv_rows(table):
            state[f"dv:{row['@odata.etag']}"] = True
    for table in ("customers", "vendors", "contacts", "salespeople", "currencies"):
        for row in await stack.bc_rows(table):
            state[f"bc:{row['@odata.etag']}"] = True
    return state


async def _continuous_counts(stack: Stack) -> dict[str, int]:
    row = await stack.pool.fetchrow(
        "SELECT sum(inserted) AS inserted, sum(modified) AS modified, sum(deleted) AS deleted, "
        "sum(unchanged) AS unchanged, sum(failed) AS failed, sum(skipped) AS skipped, "
        "sum(pending) AS pending, sum(coupled) AS coupled "
        "FROM job_partitions JOIN jobs USING (job_id) WHERE kind = 'continuous'"
    )
    return {k: int(v or 0) for k, v in dict(row).items()}


# 3. No duplicates


@pytest.mark.parametrize("mapping", ["SALESPEOPLE", "CURRENCY"])
async def test_a_crash_between_create_and_coupling_makes_no_duplicate(
    stack: Stack, ops: Operations, tmp_path: Path, mapping: str
) -> None:
    # SALESPEOPLE creates in BC, which picks the ids; CURRENCY creates in
    # Dataverse. The process dies after the destination created the records
    # and before their couplings were committed.
    log = tmp_path / "crashing.log"
    process = await stack.spawn(
        "run", "all", log=log, TABLESYNC_FAULT_POINT=f"apply.after_write:{mapping}"
    )
    await wait_for(stack.capture_polling, timeout_s=60, what="the process to start")
    run_id = await ops.full_sync()
    code = await asyncio.wait_for(process.wait(), timeout=90)
    assert code == 137, log.read_text()[-2000:]
    # Records coupled by match may have committed before the batch that creates.
    everything = (
        await stack.dv_rows(
            "systemusers",
            "?$filter=isdisabled eq false and islicensed eq true and accessmode ne 4",
        )
        if mapping == "SALESPEOPLE"
        else await stack.bc_rows("currencies")
    )
    coupled = await stack.couplings(mapping)
    assert len(coupled) < len(everything), "the crash came too late to test anything"
    await stack.start()
    progress = await ops.wait(run_id, timeout_s=120)
    assert progress.run.status == "finished"
    if mapping == "SALESPEOPLE":
        people = await stack.bc_rows("salespeople")
        users = await stack.dv_rows(
            "systemusers",
            "?$filter=isdisabled eq false and islicensed eq true and accessmode ne 4",
        )
        assert len(people) == len(users), [p["name"] for p in people]
        assert sorted(p["name"] for p in people) == sorted(u["fullname"] for u in users)
        assert len(await stack.couplings("SALESPEOPLE")) == len(users)
    else:
        currencies = await stack.dv_rows("transactioncurrencies")
        codes = [c["isocurrencycode"] for c in currencies]
        assert len(codes) == len(set(codes)), codes
        assert len(await stack.couplings("CURRENCY")) == len(await stack.bc_rows("currencies"))


@contextlib.asynccontextmanager
async def _deleting_stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, *, only_coupled: bool = True
) -> AsyncIterator[tuple[Stack, Operations, KafkaPublisher]]:
    """A stack whose CUSTOMER mapping deletes the counterpart of a deleted record."""
    document = yaml.safe_load(DEFAULT_MAPPINGS.read_text())
    document["mappings"]["CUSTOMER"]["deletion"] = "delete"
    document["mappings"]["CUSTOMER"]["sync_only_coupled"] = only_coupled
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers,
        state_dsn=state_dsn,
        topic_prefix=topic_prefix,
        mappings_document=document,
    ) as stack:
        publisher = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
        await publisher.start()
        try:
            ops = Operations(
                JobStore(stack.pool), publisher, CODEC, topics_for(stack.settings), SystemClock()
            )
            yield stack, ops, publisher
        finally:
            await publisher.stop()


async def test_a_create_interrupted_for_good_holds_back_only_its_own_record(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str
) -> None:
    # The state a process leaves when it dies while BC is creating a customer
    # for a Dataverse account: the intent (BC picks the id, so none yet) and
    # the customer BC made. The account is deleted before apply is back, so no
    # event of it will ever be replayed.
    async with _deleting_stack(infra, state_dsn, topic_prefix, only_coupled=False) as (
        stack,
        ops,
        _,
    ):
        await stack.start()
        await _full_sync(ops)
        await stack.stop()
        before = await _continuous_counts(stack)
        account = await stack.dv_post(
            "accounts",
            {"name": "Interrupted create", "accountnumber": "INT-1", "customertypecode": 3},
        )
        sent: dict[str, FieldValue] = {
            "number": "INT-1",
            "displayName": "Interrupted create",
            "city": "",
        }
        await ApplyStateStore(stack.pool).record_intents(
            [Intent("CUSTOMER", "dataverse", account["accountid"], None, datetime.now(UTC), sent)]
        )
        made = await stack.bc_post(
            "customers", {"number": "INT-1", "displayName": "Interrupted create"}
        )
        gone = await stack.dv.delete(f"/api/data/v9.2/accounts({account['accountid']})")
        assert gone.status_code == 204, gone.text

        await stack.start(sync=stack.settings.sync.model_copy(update={"intent_timeout_s": 1.0}))
        # A user's customer does not look like the interrupted create: it syncs at once.
        user = await stack.bc_post("customers", {"number": "USER-1", "displayName": "A user's"})

        async def user_coupled() -> bool:
            return user["id"] in await stack.couplings("CUSTOMER")

        await wait_for(user_coupled, timeout_s=60, what="the user's customer to be coupled")

        # The customer the create made goes the way of its deleted source
        # (deletion policy 'delete'), and nothing waits for that create any more.
        async def settled() -> bool:
            left = await stack.bc_rows("customers", "?$filter=number eq 'INT-1'")
            intents = await stack.pool.fetch("SELECT * FROM create_intents")
            held = await stack.pool.fetch(
                "SELECT * FROM record_status WHERE source_id = $1", made["id"]
            )
            return not left and not intents and not held

        await wait_for(settled, timeout_s=60, what="the interrupted create to be settled")
        assert made["id"] not in await stack.couplings("CUSTOMER")
        assert not await stack.dv_rows("accounts", "?$filter=accountnumber eq 'INT-1'")
        after = await _continuous_counts(stack)
        grown = {k: after[k] - before[k] for k in after}
        # Inserted: the user's account in Dataverse and the interrupted create's customer.
        assert (grown["inserted"], grown["deleted"]) == (2, 1), grown


async def test_a_crash_between_a_delete_and_its_commit_still_counts_the_deletion(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, tmp_path: Path
) -> None:
    # After the crash the counterpart is already gone: tablesync must know it
    # deleted it itself (and count it), rather than take it for someone
    # else's deletion and only uncouple.
    async with _deleting_stack(infra, state_dsn, topic_prefix) as (stack, ops, _):
        await stack.start()
        await _full_sync(ops)
        await stack.stop()
        bc_id, dv_id = sorted((await stack.couplings("CUSTOMER")).items())[0]
        before = await _continuous_counts(stack)
        log = tmp_path / "crashing.log"
        process = await stack.spawn(
            "run", "all", log=log, TABLESYNC_FAULT_POINT="apply.after_write:CUSTOMER"
        )
        await wait_for(stack.capture_polling, timeout_s=60, what="the process to start")
        deleted = await stack.bc.delete(
            stack.bc_path("customers", bc_id), headers={"If-Match": "*"}
        )
        assert deleted.status_code == 204, deleted.text
        code = await asyncio.wait_for(process.wait(), timeout=90)
        assert code == 137, log.read_text()[-2000:]
        assert not await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
        assert bc_id in await stack.couplings("CUSTOMER"), "the crash came after the commit"

        await stack.start()

        async def uncoupled() -> bool:
            return bc_id not in await stack.couplings("CUSTOMER")

        await wait_for(uncoupled, timeout_s=60, what="the coupling to be removed")
        after = await _continuous_counts(stack)
        assert after["deleted"] - before["deleted"] == 1, (before, after)
        assert not await stack.pool.fetch("SELECT * FROM write_intents")


async def test_a_replayed_version_of_a_deleted_record_is_not_created_again(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str
) -> None:
    # Capture publishes a version again after a crash before its checkpoint;
    # by then the record may be deleted and uncoupled. It must not come back.
    async with _deleting_stack(infra, state_dsn, topic_prefix, only_coupled=False) as (
        stack,
        ops,
        publisher,
    ):
        await stack.start()
        await _full_sync(ops)
        bc_id, dv_id = sorted((await stack.couplings("CUSTOMER")).items())[0]
        old = (await stack.bc_rows("customers", f"?$filter=id eq {bc_id}"))[0]
        accounts = len(await stack.dv_rows("accounts"))
        deleted = await stack.bc.delete(
            stack.bc_path("customers", bc_id), headers={"If-Match": "*"}
        )
        assert deleted.status_code == 204, deleted.text

        async def gone() -> bool:
            rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
            return not rows and bc_id not in await stack.couplings("CUSTOMER")

        await wait_for(gone, what="the account to be deleted and uncoupled")
        stale = RecordChanged(
            side="bc",
            table="customers",
            record_id=bc_id,
            op="upsert",
            modified_at=_stamp(old["lastModifiedDateTime"]),
            captured_at=_stamp(old["lastModifiedDateTime"]),
            fields={k: v for k, v in old.items() if not k.startswith("@")},
            etag=old["@odata.etag"],
        )
        topic = topics_for(stack.settings).cdc("bc", "customers")
        partition, offset = await publisher.publish(
            Message(topic, bc_id.encode(), CODEC.encode(stale))
        )

        await wait_applied(stack, "CUSTOMER", topic, partition, offset)
        assert len(await stack.dv_rows("accounts")) == accounts - 1
        assert not await stack.dv_rows("accounts", f"?$filter=accountnumber eq '{old['number']}'")


# 5. Ordered per record


async def test_an_older_event_never_overwrites_newer_state(
    stack: Stack, ops: Operations, publisher: KafkaPublisher
) -> None:
    await stack.start()
    await _full_sync(ops)
    couplings = await stack.couplings("CUSTOMER")
    bc_id, dv_id = sorted(couplings.items())[0]
    old = (await stack.bc_rows("customers", f"?$filter=id eq {bc_id}"))[0]
    new = await stack.bc_patch("customers", bc_id, {"city": "Newtown"})

    async def arrived() -> bool:
        rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
        return rows[0]["address1_city"] == "Newtown"

    await wait_for(arrived, what="the new city in Dataverse")
    # The event of the version before, arriving late (a replay, a slow
    # producer): it must not put the old city back.
    stale = RecordChanged(
        side="bc",
        table="customers",
        record_id=bc_id,
        op="upsert",
        modified_at=_stamp(old["lastModifiedDateTime"]),
        captured_at=_stamp(new["lastModifiedDateTime"]) + timedelta(seconds=1),
        fields={**{k: v for k, v in old.items() if not k.startswith("@")}, "city": "Oldtown"},
        etag=old["@odata.etag"],
    )
    topic = topics_for(stack.settings).cdc("bc", "customers")
    partition, offset = await publisher.publish(Message(topic, bc_id.encode(), CODEC.encode(stale)))

    await wait_applied(stack, "CUSTOMER", topic, partition, offset)
    rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
    assert rows[0]["address1_city"] == "Newtown"


def _stamp(text: str) -> Any:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# 8. Bad input never stops a service


async def test_poison_events_are_dead_lettered_and_the_service_goes_on(
    stack: Stack, ops: Operations, publisher: KafkaPublisher
) -> None:
    await stack.start()
    await _full_sync(ops)
    topics = topics_for(stack.settings)
    topic = topics.cdc("bc", "customers")
    now = SystemClock().now()
    unknown_table = RecordChanged(
        side="bc",
        table="widgets",
        record_id=str(uuid.uuid4()),
        op="upsert",
        modified_at=now,
        captured_at=now,
        fields={"name": "x"},
    )
    bad_id = RecordChanged(
        side="bc",
        table="customers",
        record_id="not-a-guid",
        op="upsert",
        modified_at=now,
        captured_at=now,
        fields={},
    )
    poison = [b"\x00\x01 not avro at all", CODEC.encode(unknown_table), CODEC.encode(bad_id)]
    for value in poison:
        await publisher.publish(Message(topic, b"poison", value))
    # A real change after the poison still arrives.
    couplings = await stack.couplings("CUSTOMER")
    bc_id, dv_id = sorted(couplings.items())[0]
    await stack.bc_patch("customers", bc_id, {"city": "After Poison"})

    async def arrived() -> bool:
        rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
        return rows[0]["address1_city"] == "After Poison"

    await wait_for(arrived, what="a change published after the poison")
    letters = await _dead_letters(stack, topics.deadletter, expected=3)
    reasons = [dict(headers)["ts.reason"].decode() for _, headers in letters]
    assert any("C3 01 marker" in r for r in reasons), reasons
    assert any("widgets" in r for r in reasons), reasons
    assert any("not a GUID" in r for r in reasons), reasons
    assert sorted(v for v, _ in letters) == sorted(poison)


async def _dead_letters(stack: Stack, topic: str, expected: int) -> list[tuple[bytes, Any]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    found: list[tuple[bytes, Any]] = []
    try:

        async def read() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.value, r.headers) for r in records)
            return len(found) >= expected

        await wait_for(read, what=f"{expected} dead letters")
    finally:
        await consumer.stop()
    return found


async def test_an_api_refusal_is_a_job_error_and_the_rest_of_the_batch_goes_on(
    stack: Stack, ops: Operations
) -> None:
    customers = await stack.bc_rows("customers", "?$filter=blocked eq ' '")
    taken = customers[-1]
    # A vendor account already holds this customer's number: Dataverse refuses
    # a second account with the same alternate key.
    await stack.dv_post(
        "accounts",
        {"name": "Vendor twin", "accountnumber": taken["number"], "customertypecode": 11},
    )
    await stack.start()
    progress = await ops.wait(
        await ops.full_sync(mappings=["CURRENCY", "SALESPEOPLE", "CUSTOMER"]), timeout_s=120
    )
    job = next(
        j for j in progress.jobs if (j.mapping, j.direction) == ("CUSTOMER", "to_integration")
    )
    assert job.counts["failed"] == 1
    assert job.counts["inserted"] + job.counts["coupled"] == len(customers) - 1
    errors = await stack.pool.fetch(
        "SELECT source_id, message FROM job_errors WHERE job_id = $1::uuid", job.job_id
    )
    assert [e["source_id"] for e in errors] == [taken["id"]]
    assert "HTTP 412" in errors[0]["message"] or "already exists" in errors[0]["message"]


async def test_a_coordinator_killed_after_asking_for_a_snapshot_resumes_without_double_counts(
    stack: Stack, ops: Operations, tmp_path: Path
) -> None:
    log = tmp_path / "coordinator.log"
    process = await stack.spawn(
        "run",
        "all",
        log=log,
        TABLESYNC_FAULT_POINT="coordinator.after_snapshot_request:CUSTOMER",
    )
    await wait_for(stack.capture_polling, timeout_s=60, what="the process to start")
    run_id = await ops.full_sync()
    code = await asyncio.wait_for(process.wait(), timeout=90)
    assert code == 137, log.read_text()[-2000:]
    await stack.start()
    progress = await ops.wait(run_id, timeout_s=120)
    assert progress.run.status == "finished"
    customers = [c for c in await stack.bc_rows("customers") if c["blocked"] == " "]
    sent = next(
        j for j in progress.jobs if (j.mapping, j.direction) == ("CUSTOMER", "to_integration")
    )
    received = next(
        j for j in progress.jobs if (j.mapping, j.direction) == ("CUSTOMER", "from_integration")
    )
    # Each BC customer counted once, however often the step was resumed.
    total = sum(sent.counts[k] for k in ("inserted", "unchanged", "modified", "failed"))
    assert total + received.counts["inserted"] == len(customers)
