"""The sync engine end to end: capture → Kafka → apply → coordinator, on the
real broker and PostgreSQL, against both API emulators."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.composition import topics_for
from tablesync.core.events import RecordChanged
from tablesync.emulators.seed import DEMO_PRODUCTS
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations
from tests.conftest import InfraEndpoints
from tests.integration.stack import Stack, open_stack, wait_applied, wait_for

pytestmark = pytest.mark.integration
CODEC = Codec()


@pytest.fixture
async def stack(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Stack]:
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as s:
        await s.start()
        yield s


@pytest.fixture
async def ops(stack: Stack) -> AsyncIterator[Operations]:
    publisher = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
    await publisher.start()
    try:
        yield Operations(
            JobStore(stack.pool), publisher, CODEC, topics_for(stack.settings), SystemClock()
        )
    finally:
        await publisher.stop()


async def test_full_sync_of_the_demo_data(stack: Stack, ops: Operations) -> None:
    await check_full_sync_of_the_demo_data(stack, ops)


async def check_full_sync_of_the_demo_data(stack: Stack, ops: Operations) -> None:
    """One full synchronization of the demo data, and what it must leave on both sides."""
    run_id = await ops.full_sync()
    progress = await ops.wait(run_id, timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    jobs = {(j.mapping, j.direction): j for j in progress.jobs}
    assert set(jobs) == {
        ("CURRENCY", "to_integration"),
        ("SALESPEOPLE", "from_integration"),
        ("VENDOR", "to_integration"),
        ("VENDOR", "from_integration"),
        ("CUSTOMER", "to_integration"),
        ("CUSTOMER", "from_integration"),
        ("CONTACTS", "to_integration"),
        ("CONTACTS", "from_integration"),
        ("UNIT_OF_MEASURE", "to_integration"),
        ("BASE_UNIT", "to_integration"),
        ("ITEM_PRODUCT", "to_integration"),
    }
    # The jobs ran in the order the mappings' lookups give.
    order = [j.mapping for j in progress.jobs]
    assert order.index("UNIT_OF_MEASURE") < order.index("BASE_UNIT") < order.index("ITEM_PRODUCT")
    await _check_products(stack, jobs)
    # Every BC customer outside the blocked one is a coupled account with its values.
    customers = [c for c in await stack.bc_rows("customers") if c["blocked"] == " "]
    accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
    couplings = await stack.couplings("CUSTOMER")
    currencies = await stack.couplings("CURRENCY")
    bc_currency = {c["code"]: c["id"] for c in await stack.bc_rows("currencies")}
    people = await stack.couplings("SALESPEOPLE")
    salespeople = {s["code"]: s["id"] for s in await stack.bc_rows("salespeople")}
    for customer in customers:
        account = accounts[couplings[customer["id"]]]
        assert account["name"] == customer["displayName"]
        assert account["accountnumber"] == customer["number"]
        assert (account["address1_city"] or "") == customer["city"]
        assert account["customertypecode"] == 3
        if customer["currencyCode"]:
            assert (
                account["_transactioncurrencyid_value"]
                == currencies[bc_currency[customer["currencyCode"]]]
            )
        if customer["salespersonCode"]:
            assert account["_ownerid_value"] == people[salespeople[customer["salespersonCode"]]]
        else:
            # No salesperson sends no owner (Not Null): the integration user owns it.
            assert account["_ownerid_value"] is not None
    # Every licensed, enabled person in Dataverse is a coupled BC salesperson.
    users = await stack.dv_rows(
        "systemusers", "?$filter=isdisabled eq false and islicensed eq true and accessmode ne 4"
    )
    assert {u["systemuserid"] for u in users} == set(people.values())
    # The job table's counts match what happened on the sides.
    assert jobs[("CURRENCY", "to_integration")].counts["inserted"] == len(bc_currency)
    people_job = jobs[("SALESPEOPLE", "from_integration")].counts
    # Three BC salespeople carry a user's e-mail and are coupled by match.
    assert (people_job["inserted"], people_job["coupled"]) == (len(users) - 3, 3)
    sent = jobs[("CUSTOMER", "to_integration")].counts
    received = jobs[("CUSTOMER", "from_integration")].counts
    # BC's customers now: those sent to Dataverse (created or matched there)
    # and those the Dataverse accounts made.
    assert sent["inserted"] + sent["coupled"] + received["inserted"] == len(customers)
    assert sent["failed"] == received["failed"] == 0


async def _check_products(stack: Stack, jobs: dict[tuple[str, str], Any]) -> None:
    """Every BC unit of measure is a coupled unit group whose base unit is coupled too,
    and every item a coupled product sold in its base unit's group."""
    units = {u["code"]: u["id"] for u in await stack.bc_rows("unitsOfMeasure")}
    groups = await stack.couplings("UNIT_OF_MEASURE")
    base_units = await stack.couplings("BASE_UNIT")
    dv_units = {u["uomid"]: u for u in await stack.dv_rows("uoms")}
    for code, unit_id in units.items():
        base = dv_units[base_units[unit_id]]
        assert (base["name"], base["isschedulebaseuom"]) == (code, True)
        assert base["_uomscheduleid_value"] == groups[unit_id]
    items = await stack.bc_rows("items")
    products = {p["productid"]: p for p in await stack.dv_rows("products")}
    coupled = await stack.couplings("ITEM_PRODUCT")
    for item in items:
        product = products[coupled[item["id"]]]
        assert product["productnumber"] == item["number"]
        assert product["name"] == item["displayName"]
        unit = units[item["baseUnitOfMeasureCode"]]
        assert product["_defaultuomscheduleid_value"] == groups[unit]
        assert product["_defaultuomid_value"] == base_units[unit]
    made = jobs[("ITEM_PRODUCT", "to_integration")].counts
    # The products Dataverse had with an item's number are matched, not created.
    assert made["coupled"] == len(DEMO_PRODUCTS)
    assert made["inserted"] + made["coupled"] == len(items) and made["failed"] == 0
    assert jobs[("UNIT_OF_MEASURE", "to_integration")].counts["inserted"] == len(units)
    assert jobs[("BASE_UNIT", "to_integration")].counts["coupled"] == len(units)


async def test_a_second_full_sync_changes_nothing(stack: Stack, ops: Operations) -> None:
    first = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert first.run.status == "finished"
    dv_before = await _versions(stack)
    second = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert second.run.status == "finished"
    for job in second.jobs:
        changed = {k: v for k, v in job.counts.items() if k != "unchanged" and v}
        assert not changed, f"{job.mapping} {job.direction}: {changed}"
    assert sum(j.counts["unchanged"] for j in second.jobs) > 0
    assert await _versions(stack) == dv_before


async def _versions(stack: Stack) -> dict[str, Any]:
    rows = await stack.dv_rows("accounts", "?$select=accountid,versionnumber")
    return {r["accountid"]: r["versionnumber"] for r in rows}


async def _full_sync(ops: Operations) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message


async def _coupled_pair(stack: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    couplings = await stack.couplings("CUSTOMER")
    customers = {c["id"]: c for c in await stack.bc_rows("customers")}
    accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
    bc_id = sorted(couplings)[0]
    return customers[bc_id], accounts[couplings[bc_id]]


async def test_a_dataverse_change_reaches_bc_and_does_not_come_back(
    stack: Stack, ops: Operations
) -> None:
    await _full_sync(ops)
    customer, account = await _coupled_pair(stack)
    person = next(iter((await stack.couplings("SALESPEOPLE")).values()))
    changed = await stack.dv_patch(
        "accounts", account["accountid"], {"telephone1": "+1 555 0100"}, as_user=person
    )

    async def reached_bc() -> dict[str, Any] | None:
        rows = await stack.bc_rows("customers", f"?$filter=id eq {customer['id']}")
        return rows[0] if rows and rows[0]["phoneNumber"] == "+1 555 0100" else None

    bc_after = await wait_for(reached_bc, what="the phone number in BC")

    async def recorded() -> bool:
        # Apply writes to BC first and commits the coupling after: wait for it.
        stamp = await stack.pool.fetchval(
            "SELECT bc_etag FROM couplings WHERE mapping = 'CUSTOMER' AND bc_id = $1::uuid",
            customer["id"],
        )
        return bool(stamp == bc_after["@odata.etag"])

    await wait_for(recorded, what="the write's version on the coupling")
    # The BC write comes back through BC's capture: left out there, its version
    # being the coupling's already, or (read before apply committed the coupling)
    # published and recognised by apply. Either way it is not written to
    # Dataverse again. Wait for capture to read past it, then for its event, if
    # there is one, to be applied.
    stamp = datetime.fromisoformat(bc_after["lastModifiedDateTime"])

    async def read_past() -> bool:
        watermark = await stack.pool.fetchval(
            "SELECT watermark FROM capture_checkpoints WHERE side = 'bc' "
            "AND table_name = 'customers'"
        )
        return bool(watermark is not None and watermark >= stamp)

    await wait_for(read_past, what="BC's capture to read the write's version")
    topic = topics_for(stack.settings).cdc("bc", "customers")
    echo = await _published(stack, topic, customer["id"], bc_after["@odata.etag"])
    if echo is not None:
        await wait_applied(stack, "CUSTOMER", topic, *echo)
    rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {account['accountid']}")
    assert rows[0]["versionnumber"] == changed["versionnumber"], "the change came back"


async def _published(stack: Stack, topic: str, record_id: str, etag: str) -> tuple[int, int] | None:
    """Partition and offset of the change event of ``record_id`` at version ``etag``
    among those on ``topic`` up to its end offsets as they are now, if there is one."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.sync.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[int, int]] = []

        async def read_to_the_end() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.key != record_id.encode() or record.value is None:
                        continue
                    event = CODEC.decode(record.value)
                    if isinstance(event, RecordChanged) and event.etag == etag:
                        found.append((tp.partition, record.offset))
            positions = [await consumer.position(tp) for tp in partitions]
            return all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True))

        await wait_for(read_to_the_end, what=f"every event of {topic}")
        return found[0] if found else None
    finally:
        await consumer.stop()


async def test_a_change_on_both_sides_follows_the_conflict_policy(
    stack: Stack, ops: Operations
) -> None:
    await _full_sync(ops)
    customer, account = await _coupled_pair(stack)
    await stack.stop()
    # Both sides change the city while no sync runs; CUSTOMER sends BC's data.
    await stack.bc_patch("customers", customer["id"], {"city": "Bruges"})
    await stack.dv_patch("accounts", account["accountid"], {"address1_city": "Ghent"})
    await stack.start()

    async def settled() -> bool:
        rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {account['accountid']}")
        return rows[0]["address1_city"] == "Bruges"

    await wait_for(settled, what="BC's city to win in Dataverse")
    bc = await stack.bc_rows("customers", f"?$filter=id eq {customer['id']}")
    assert bc[0]["city"] == "Bruges"


async def test_a_conflict_under_policy_none_is_skipped_with_an_error(
    stack: Stack, ops: Operations
) -> None:
    await stack.set_mapping("CUSTOMER", sync_only_coupled=True)
    await _full_sync(ops)
    customer, account = await _coupled_pair(stack)
    await stack.stop()
    document_change = {"update_conflict": "none"}
    await _patch_mapping_document(stack, "CUSTOMER", document_change)
    await stack.bc_patch("customers", customer["id"], {"city": "Bruges"})
    await stack.dv_patch("accounts", account["accountid"], {"address1_city": "Ghent"})
    await stack.start()

    async def skipped() -> bool:
        status = await stack.pool.fetchval(
            "SELECT status FROM record_status WHERE mapping = 'CUSTOMER' AND source_id = $1",
            customer["id"],
        )
        return status == "skipped"

    await wait_for(skipped, what="the conflict to be skipped")
    message = await stack.pool.fetchval(
        "SELECT message FROM job_errors WHERE mapping = 'CUSTOMER' AND source_id = $1",
        customer["id"],
    )
    assert "changed in both" in message
    dv = await stack.dv_rows("accounts", f"?$filter=accountid eq {account['accountid']}")
    bc = await stack.bc_rows("customers", f"?$filter=id eq {customer['id']}")
    assert (dv[0]["address1_city"], bc[0]["city"]) == ("Ghent", "Bruges")


async def _patch_mapping_document(stack: Stack, name: str, changes: dict[str, Any]) -> None:
    await stack.pool.execute(
        "UPDATE mappings SET definition = definition || $2::jsonb, updated_at = now() "
        "WHERE name = $1",
        name,
        changes,
    )


async def test_a_new_bc_customer_is_created_in_dataverse(stack: Stack, ops: Operations) -> None:
    # How soon it arrives is a figure of the continuous bench (make bench): a
    # wall-clock bound here would only measure how loaded the machine is.
    await _full_sync(ops)
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    created = await stack.bc_post(
        "customers", {"displayName": "Woodgrove Bank", "city": "Redmond", "number": "C90001"}
    )

    async def coupled() -> str | None:
        return (await stack.couplings("CUSTOMER")).get(created["id"])

    dv_id = await wait_for(coupled, what="the new customer to be coupled")
    account = (await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}"))[0]
    assert account["name"] == "Woodgrove Bank" and account["accountnumber"] == "C90001"


async def test_a_customer_waits_for_its_salesperson_then_applies(
    stack: Stack, ops: Operations
) -> None:
    await _full_sync(ops)
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    # A salesperson made in BC by hand: no Dataverse user is coupled to it.
    person = await stack.bc_post(
        "salespeople", {"name": "Ada Lovelace", "email": "ada@cronus.example"}
    )
    customer = await stack.bc_post(
        "customers",
        {"displayName": "Pending Ltd", "number": "C90002", "salespersonCode": person["code"]},
    )

    async def pending() -> bool:
        status = await stack.pool.fetchval(
            "SELECT status FROM record_status WHERE mapping = 'CUSTOMER' AND source_id = $1",
            customer["id"],
        )
        return status == "pending"

    await wait_for(pending, what="the customer to wait for its salesperson")
    assert customer["id"] not in await stack.couplings("CUSTOMER")
    # Her Dataverse user arrives; a full sync of SALESPEOPLE couples the two by e-mail.
    user = await stack.dv_post(
        "systemusers",
        {
            "firstname": "Ada",
            "lastname": "Lovelace",
            "internalemailaddress": "ada@cronus.example",
            "islicensed": True,
            "isdisabled": False,
            "accessmode": 0,
        },
    )
    progress = await ops.wait(await ops.full_sync(mappings=["SALESPEOPLE"]), timeout_s=60)
    assert progress.jobs[0].counts["coupled"] == 1
    assert (await stack.couplings("SALESPEOPLE"))[person["id"]] == user["systemuserid"]

    async def applied() -> str | None:
        return (await stack.couplings("CUSTOMER")).get(customer["id"])

    dv_id = await wait_for(applied, what="the pending customer to apply")
    account = (await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}"))[0]
    assert account["_ownerid_value"] == user["systemuserid"]


async def _cli_json(stack: Stack, *args: str, code: int = 0) -> Any:
    """``tablesync <args> --json`` in its own process against the stack: its output
    (its exit code ``code``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        *args,
        "--json",
        env=stack.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == code, err.decode()[-2000:]
    return json.loads(out)


async def test_an_unconditional_full_sync_writes_a_field_mapping_added_later_to_every_pair(
    stack: Stack, ops: Operations
) -> None:
    await _full_sync(ops)
    couplings = await stack.couplings("CUSTOMER")
    # Tax registration numbers BC holds that no field mapping carries yet:
    # synced as changes, they write nothing.
    etags = {}
    for n, bc_id in enumerate(sorted(couplings)):
        row = await stack.bc_patch("customers", bc_id, {"taxRegistrationNumber": f"TX{n:04d}"})
        etags[bc_id] = row["@odata.etag"]

    async def synced() -> bool:
        rows = await stack.pool.fetch(
            "SELECT bc_id::text AS bc, bc_etag FROM couplings WHERE mapping = 'CUSTOMER'"
        )
        return {r["bc"]: r["bc_etag"] for r in rows} == etags

    await wait_for(synced, what="the tax numbers' versions on the couplings")
    accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
    assert not any(accounts[dv_id]["description"] for dv_id in couplings.values())
    # The field mapping is added and loaded.
    document = yaml.safe_load(default_mapping_file().read_text())
    document["mappings"]["CUSTOMER"]["fields"].append(
        {"bc": "taxRegistrationNumber", "dataverse": "description", "direction": "to_integration"}
    )
    await MappingStore(stack.pool).replace_all(document)
    # A plain full sync would leave them alone; the unconditional one writes them.
    plain, unconditional = [
        {p["direction"]: p for p in await _cli_json(stack, *args)}
        for args in (
            ("full-sync", "--dry-run", "--mapping", "CUSTOMER"),
            ("full-sync", "--dry-run", "--unconditional", "--mapping", "CUSTOMER"),
        )
    ]
    assert plain["to_integration"]["would_update"] == 0
    assert plain["to_integration"]["unchanged"] == len(couplings)
    assert unconditional["to_integration"]["would_update"] == len(couplings)
    assert unconditional["from_integration"]["would_update"] == 0
    before = await _versions(stack)
    first = await _cli_json(
        stack, "full-sync", "--unconditional", "--mapping", "CUSTOMER", "--wait"
    )
    assert first["status"] == "finished", first["message"]
    jobs = {j["direction"]: j for j in first["jobs"]}
    assert jobs.keys() == {"to_integration", "from_integration"}
    sent, received = jobs["to_integration"], jobs["from_integration"]
    assert (sent["modified"], sent["unchanged"]) == (len(couplings), 0)
    assert sent["inserted"] == sent["failed"] == sent["skipped"] == 0
    assert (received["modified"], received["unchanged"]) == (0, len(couplings))
    customers = {c["id"]: c for c in await stack.bc_rows("customers")}
    accounts = {a["accountid"]: a for a in await stack.dv_rows("accounts")}
    for bc_id, dv_id in couplings.items():
        assert accounts[dv_id]["description"] == customers[bc_id]["taxRegistrationNumber"]
    written = await _versions(stack)
    assert {a for a in written if written[a] != before[a]} == set(couplings.values())
    # A second unconditional run finds every coupled record as it should be.
    second = await ops.wait(
        await ops.full_sync(mappings=["CUSTOMER"], unconditional=True), timeout_s=120
    )
    assert second.run.status == "finished", second.run.message
    for job in second.jobs:
        assert job.counts["unchanged"] == len(couplings), job.counts
        assert not {k: v for k, v in job.counts.items() if k != "unchanged" and v}
    assert await _versions(stack) == written


async def test_sync_record_compares_one_healthy_pair_and_writes_only_it(
    stack: Stack, ops: Operations
) -> None:
    await _full_sync(ops)
    couplings = await stack.couplings("CUSTOMER")
    chosen, *others = sorted(couplings)
    row = await stack.bc_patch("customers", chosen, {"taxRegistrationNumber": "TX-NOW"})

    async def synced() -> bool:
        etag = await stack.pool.fetchval(
            "SELECT bc_etag FROM couplings WHERE mapping = 'CUSTOMER' AND bc_id = $1::uuid",
            chosen,
        )
        return bool(etag == row["@odata.etag"])

    await wait_for(synced, what="the tax number's version on the coupling")
    document = yaml.safe_load(default_mapping_file().read_text())
    document["mappings"]["CUSTOMER"]["fields"].append(
        {"bc": "taxRegistrationNumber", "dataverse": "description", "direction": "to_integration"}
    )
    await MappingStore(stack.pool).replace_all(document)
    before = await _versions(stack)
    # By the Dataverse id: the pair is found through its coupling.
    result = await _cli_json(stack, "sync-record", "CUSTOMER", "--dataverse-id", couplings[chosen])
    assert result["action"] == "sync_now" and result["records"] == 2
    assert result["counts"] == {"modified": 1, "unchanged": 1}
    assert len(result["jobs"]) == 2
    account = (await stack.dv_rows("accounts", f"?$filter=accountid eq {couplings[chosen]}"))[0]
    assert account["description"] == "TX-NOW"
    after = await _versions(stack)
    assert {a for a in after if after[a] != before[a]} == {couplings[chosen]}
    # Again: nothing left to write.
    again = await _cli_json(stack, "sync-record", "CUSTOMER", "--bc-id", chosen)
    assert again["counts"] == {"unchanged": 2}
    assert await _versions(stack) == after
    assert others, "the demo data has more than one coupled customer"


async def test_a_coupling_run_couples_by_match_lists_the_ambiguous_and_creates_only_when_asked(
    stack: Stack, ops: Operations
) -> None:
    matched = await stack.bc_post("customers", {"displayName": "Match Co", "number": "C70001"})
    account = await stack.dv_post(
        "accounts", {"name": "Match Company", "accountnumber": "C70001", "customertypecode": 3}
    )
    alone = await stack.bc_post("customers", {"displayName": "Alone Co", "number": "C70003"})
    # BC keeps customer numbers unique, Dataverse its account numbers (a key):
    # an ambiguous match is two BC salespeople with one Dataverse user's e-mail.
    for code in ("SPDUP1", "SPDUP2"):
        await stack.bc_post(
            "salespeople", {"code": code, "name": f"Twin {code}", "email": "twin@cronus.example"}
        )
    user = await stack.dv_post(
        "systemusers",
        {
            "firstname": "Twin",
            "lastname": "User",
            "internalemailaddress": "twin@cronus.example",
            "islicensed": True,
            "isdisabled": False,
            "accessmode": 0,
        },
    )
    accounts_before = len(await stack.dv_rows("accounts"))
    salespeople_before = len(await stack.bc_rows("salespeople"))

    # Exit code 1: a record failed (the ambiguous one), as for a full synchronization.
    first = await _cli_json(
        stack,
        "couple-by-match",
        "--mapping",
        "SALESPEOPLE",
        "--mapping",
        "CUSTOMER",
        "--wait",
        code=1,
    )
    assert first["status"] == "finished", first["message"]
    jobs = {j["mapping"]: j for j in first["jobs"]}
    assert jobs.keys() == {"SALESPEOPLE", "CUSTOMER"}
    # One way each, from BC where the mapping goes there, as BC's coupling goes.
    people, customers = jobs["SALESPEOPLE"], jobs["CUSTOMER"]
    assert (people["direction"], people["type"]) == ("from_integration", "coupling")
    assert (customers["direction"], customers["type"]) == ("to_integration", "coupling")
    for job in (people, customers):
        assert job["inserted"] == job["modified"] == 0, job
    assert customers["coupled"] >= 1 and customers["unmatched"] >= 1
    assert people["failed"] == 1
    couplings = await stack.couplings("CUSTOMER")
    assert couplings[matched["id"]] == account["accountid"]
    assert alone["id"] not in couplings
    assert user["systemuserid"] not in (await stack.couplings("SALESPEOPLE")).values()
    # Nothing was created or written: the matched account keeps its own name.
    assert len(await stack.dv_rows("accounts")) == accounts_before
    assert len(await stack.bc_rows("salespeople")) == salespeople_before
    row = (await stack.dv_rows("accounts", f"?$filter=accountid eq {account['accountid']}"))[0]
    assert row["name"] == "Match Company"
    errors = await stack.pool.fetch(
        "SELECT source_id, message FROM job_errors WHERE job_id = $1::uuid", people["job_id"]
    )
    assert [e["source_id"] for e in errors] == [user["systemuserid"]]
    assert "2 uncoupled salespeople match" in errors[0]["message"]

    second = await _cli_json(
        stack, "couple-by-match", "--mapping", "CUSTOMER", "--create-new", "--wait"
    )
    assert second["status"] == "finished", second["message"]
    (job,) = second["jobs"]
    assert job["inserted"] >= 1
    couplings = await stack.couplings("CUSTOMER")
    made = (await stack.dv_rows("accounts", f"?$filter=accountid eq {couplings[alone['id']]}"))[0]
    assert made["accountnumber"] == "C70003"


async def test_selected_records_are_coupled_by_match_now_in_a_job_of_their_own(
    stack: Stack,
) -> None:
    matched = await stack.bc_post("customers", {"displayName": "Pick Co", "number": "C71001"})
    account = await stack.dv_post(
        "accounts", {"name": "Pick Company", "accountnumber": "C71001", "customertypecode": 3}
    )
    alone = await stack.bc_post("customers", {"displayName": "Lone Co", "number": "C71002"})
    untouched = await stack.bc_post("customers", {"displayName": "Left Co", "number": "C71003"})
    await stack.dv_post(
        "accounts", {"name": "Left Company", "accountnumber": "C71003", "customertypecode": 3}
    )
    accounts_before = len(await stack.dv_rows("accounts"))

    first = await _cli_json(
        stack,
        "couple-by-match",
        "--mapping",
        "CUSTOMER",
        "--bc-id",
        matched["id"],
        "--bc-id",
        alone["id"],
    )
    assert (first["action"], first["records"]) == ("couple_by_match", 2)
    # Coupled with nothing written counts unchanged too, as in a coupling run.
    assert first["counts"] == {"coupled": 1, "unchanged": 1, "unmatched": 1}
    [job_id] = first["jobs"]
    job = await stack.pool.fetchrow(
        "SELECT type, direction FROM job_totals WHERE job_id = $1::uuid", job_id
    )
    assert (job["type"], job["direction"]) == ("coupling", "to_integration")
    couplings = await stack.couplings("CUSTOMER")
    assert couplings[matched["id"]] == account["accountid"]
    # Only the records named: a match of another record is left for later.
    assert alone["id"] not in couplings and untouched["id"] not in couplings
    assert len(await stack.dv_rows("accounts")) == accounts_before
    row = (await stack.dv_rows("accounts", f"?$filter=accountid eq {account['accountid']}"))[0]
    assert row["name"] == "Pick Company"

    # Again, creating what has no match: the coupled one is left alone.
    second = await _cli_json(
        stack,
        "couple-by-match",
        "--mapping",
        "CUSTOMER",
        "--bc-id",
        matched["id"],
        "--bc-id",
        alone["id"],
        "--create-new",
    )
    assert second["counts"] == {"inserted": 1, "unchanged": 1}
    assert alone["id"] in await stack.couplings("CUSTOMER")
    assert len(await stack.dv_rows("accounts")) == accounts_before + 1
