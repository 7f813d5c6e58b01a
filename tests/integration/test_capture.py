"""Capture that cannot miss, end to end: the real services on Kafka and PostgreSQL
against both HTTP emulators. A row committed long after its stamp still syncs (BC
within the look-back, Dataverse through change tracking); an expired delta link falls
back and recovers; a scan that would remove most couplings stops and raises the alert;
a confirmed deletion is published once."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tablesync import metrics
from tablesync.adapters.avro import Codec
from tablesync.composition import topics_for
from tablesync.core.events import RecordChanged
from tablesync.settings import SyncSettings
from tests.conftest import InfraEndpoints
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.integration.stack import Stack, open_stack, wait_for

pytestmark = pytest.mark.integration
CODEC = Codec()


@pytest.fixture
async def stack(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Stack]:
    document = {"mappings": {"CUSTOMER": copy.deepcopy(MAPPINGS_DOCUMENT["mappings"]["CUSTOMER"])}}
    sync = SyncSettings(
        poll_interval_s=0.2,
        partitions=3,
        delete_scan_interval_s=1.0,
        delete_scan_min_cap=3,
        poll_overlap_s=0.0,
        lookback_s=300.0,
        lookback_interval_s=1.0,
        retry_backoff_s=0.5,
        retry_backoff_max_s=2.0,
    )
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers,
        state_dsn=state_dsn,
        topic_prefix=topic_prefix,
        demo=False,
        mappings_document=document,
        sync=sync,
    ) as s:
        await s.start()
        yield s


async def _customer(stack: Stack, tag: str) -> tuple[dict[str, Any], str]:
    """A BC customer synced to Dataverse: the customer and its account's id."""
    customer = await stack.bc_post(
        "customers", {"number": tag, "displayName": f"{tag} v0", "blocked": " "}
    )

    async def coupled() -> str | None:
        return (await stack.couplings("CUSTOMER")).get(customer["id"])

    return customer, await wait_for(coupled, what=f"{tag} to be created in Dataverse")


async def _dv_name(stack: Stack, account_id: str) -> str | None:
    rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {account_id}")
    return rows[0]["name"] if rows else None


async def _bc_name(stack: Stack, customer_id: str) -> str | None:
    rows = await stack.bc_rows("customers", f"?$filter=id eq {customer_id}")
    return rows[0]["displayName"] if rows else None


@asynccontextmanager
async def _late(dsn: str, sql: str, *args: object) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that writes on entry and commits on exit: a long posting, a
    plug-in, a $batch change set that stamps its rows well before it commits."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(sql, *args)
            yield conn
    finally:
        await conn.close()


async def _checkpoint(stack: Stack, table: str) -> asyncpg.Record:
    row: asyncpg.Record = await stack.pool.fetchrow(
        "SELECT watermark, delta_link FROM capture_checkpoints WHERE table_name = $1", table
    )
    return row


async def test_a_late_commit_on_either_side_is_still_synced(stack: Stack) -> None:
    customer, account_id = await _customer(stack, f"L{uuid.uuid4().hex[:6]}")
    passing, passing_account = await _customer(stack, f"P{uuid.uuid4().hex[:6]}")

    # Dataverse: stamped an hour ago, committed after capture read past a later change.
    async with _late(
        stack.dv_dsn,
        "UPDATE accounts SET name = 'late in dataverse', versionnumber = nextval('ts_version'),"
        " modifiedon = date_trunc('second', now() - interval '1 hour') WHERE accountid = $1",
        uuid.UUID(account_id),
    ):
        await stack.dv_patch("accounts", passing_account, {"name": "passed by capture"})

        async def passed() -> bool:
            return await _bc_name(stack, passing["id"]) == "passed by capture"

        await wait_for(passed, what="a later Dataverse change to reach BC")
    watermark = (await _checkpoint(stack, "accounts"))["watermark"]

    async def dv_late_synced() -> bool:
        return await _bc_name(stack, customer["id"]) == "late in dataverse"

    await wait_for(dv_late_synced, what="the late Dataverse commit to reach BC")
    stamp = (await stack.dv_rows("accounts", f"?$filter=accountid eq {account_id}"))[0]
    assert stamp["modifiedon"] < watermark.strftime("%Y-%m-%dT%H:%M:%SZ")

    # BC: stamped when written, as BC stamps a row, and committed only after a change
    # made later was captured: behind the checkpoint by then (no overlap in this stack).
    async with _late(
        stack.bc_dsn,
        "UPDATE customers SET \"displayName\" = 'late in bc', \"_version\" = nextval('ts_version'),"
        ' "lastModifiedDateTime" = clock_timestamp() WHERE id = $1',
        uuid.UUID(customer["id"]),
    ) as late:
        stamped = await late.fetchval(
            'SELECT "lastModifiedDateTime" FROM customers WHERE id = $1', uuid.UUID(customer["id"])
        )
        await stack.bc_patch("customers", passing["id"], {"displayName": "passed in bc"})

        async def bc_passed() -> bool:
            return await _dv_name(stack, passing_account) == "passed in bc"

        await wait_for(bc_passed, what="a later BC change to reach Dataverse")
        assert (await _checkpoint(stack, "customers"))["watermark"] > stamped

    async def bc_late_synced() -> bool:
        return await _dv_name(stack, account_id) == "late in bc"

    await wait_for(bc_late_synced, what="the late BC commit to reach Dataverse (the look-back)")


async def test_an_expired_delta_link_falls_back_and_recovers(stack: Stack) -> None:
    customer, account_id = await _customer(stack, f"E{uuid.uuid4().hex[:6]}")
    doomed, doomed_account = await _customer(stack, f"D{uuid.uuid4().hex[:6]}")
    before = (await _checkpoint(stack, "accounts"))["delta_link"]
    assert before is not None and "$deltatoken=" in before

    (await stack.dv.post("/_emulator/change-tracking/expire")).raise_for_status()
    await stack.dv_patch("accounts", account_id, {"name": "changed while expired"})
    (await stack.dv.delete(f"/api/data/v9.2/accounts({doomed_account})")).raise_for_status()

    async def fell_back() -> bool:
        return await _bc_name(stack, customer["id"]) == "changed while expired"

    await wait_for(fell_back, what="the change made as the link expired to reach BC")

    async def deleted() -> bool:
        return await _bc_name(stack, doomed["id"]) is None

    await wait_for(deleted, what="the deletion made as the link expired (found by a scan)")
    after = (await _checkpoint(stack, "accounts"))["delta_link"]
    assert after is not None and after != before
    await stack.dv_patch("accounts", account_id, {"name": "on the new link"})

    async def recovered() -> bool:
        return await _bc_name(stack, customer["id"]) == "on the new link"

    await wait_for(recovered, what="a change on the new delta link to reach BC")


def _halted(side: str, table: str, mapping: str) -> float:
    text = metrics.render(metrics.StateSnapshot(), process=False).decode()
    wanted = (
        f'tablesync_deletion_scan_halted_total{{mapping="{mapping}",side="{side}",table="{table}"}}'
    )
    return next(
        (float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted)),
        0.0,
    )


async def test_a_scan_that_would_remove_most_couplings_stops_and_raises_the_alert(
    stack: Stack,
) -> None:
    made = [await _customer(stack, f"M{n}{uuid.uuid4().hex[:5]}") for n in range(8)]
    before = _halted("bc", "customers", "CUSTOMER")

    # Gone from the listing and from a direct read alike, as a wrong company or a
    # permission taken away would make them look: six of eight at once.
    conn = await asyncpg.connect(stack.bc_dsn)
    try:
        await conn.execute(
            "DELETE FROM customers WHERE id = ANY($1::uuid[])",
            [uuid.UUID(c["id"]) for c, _ in made[:6]],
        )
    finally:
        await conn.close()

    async def alerted() -> bool:
        return _halted("bc", "customers", "CUSTOMER") >= before + 2

    await wait_for(alerted, what="two deletion scans to halt and count the alert")
    accounts = {a["accountid"] for a in await stack.dv_rows("accounts")}
    assert {dv for _, dv in made} <= accounts
    assert len(await stack.couplings("CUSTOMER")) >= 8


async def test_a_confirmed_deletion_is_published_once(stack: Stack) -> None:
    made = [await _customer(stack, f"C{n}{uuid.uuid4().hex[:5]}") for n in range(6)]
    (customer, account_id), later = made[0], made[1:3]

    for c, dv in [(customer, account_id), *later]:
        # Each deletion after the first is found by a later scan: scans went on after
        # the first one was published, and found nothing more to publish of it.
        r = await stack.bc.delete(stack.bc_path("customers", c["id"]), headers={"If-Match": "*"})
        r.raise_for_status()

        async def gone(account: str = dv) -> bool:
            return await _dv_name(stack, account) is None

        await wait_for(gone, what="a BC deletion to reach Dataverse")

    topic = topics_for(stack.settings).cdc("bc", "customers")
    deleted = [e.record_id for e in await _events(stack, topic) if e.op == "delete"]
    assert sorted(deleted) == sorted(c["id"] for c, _ in [made[0], *later])


async def _events(stack: Stack, topic: str) -> list[RecordChanged]:
    """Every event on ``topic``, up to its end offsets as they are now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(stack.settings.sync.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[RecordChanged] = []

        async def read_to_the_end() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    event = CODEC.decode(record.value or b"")
                    if isinstance(event, RecordChanged):
                        found.append(event)
            positions = [await consumer.position(tp) for tp in partitions]
            return all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True))

        await wait_for(read_to_the_end, what=f"every event of {topic}")
        return found
    finally:
        await consumer.stop()
