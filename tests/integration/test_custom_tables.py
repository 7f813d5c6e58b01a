"""A custom Dataverse table with a lookup and a custom BC API page, declared for the
emulators and mapped in the mappings YAML only: a full synchronization and later changes
move their records both ways, the lookup resolved through CUSTOMER's couplings; a custom
choice column and a BC enum through an option map drafted from their labels, a value
outside it a record error naming the field and the value."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.composition import topics_for
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations
from tests.conftest import InfraEndpoints
from tests.integration.stack import Stack, open_stack, wait_for

pytestmark = pytest.mark.integration

CUSTOM = """
dataverse:
  option_sets:
    - name: new_priority
      options: {1: Low, 2: Normal, 3: High, 4: Critical}
  tables:
    - logical_name: new_project
      entity_set: new_projects
      display_name: Project
      primary_name: new_name
      columns:
        - {name: new_name, type: string, max_length: 100}
        - {name: new_code, type: string, max_length: 20}
        - {name: new_accountid, type: lookup, target: account, navigation: new_AccountId}
        - {name: new_priority, type: picklist, option_set: new_priority}
bc:
  pages:
    - route: contoso/projects/v1.0
      entity_set: projects
      entity_name: project
      fields:
        - {name: code, type: string, max_length: 20, required: true}
        - {name: description, type: string, max_length: 100}
        - {name: customerNumber, type: string, max_length: 20}
        - {name: priority, type: enum, options: [Normal, Low, High, Urgent]}
"""

PROJECT = """
bc_table: projects
dataverse_table: new_projects
direction: bidirectional
depends_on: [CUSTOMER]
sync_only_coupled: true
bc_key: code
match:
  - {bc: code, dataverse: new_code}
fields:
  - {bc: code, dataverse: new_code, code: true, max_length: 20}
  - {bc: description, dataverse: new_name, max_length: 100}
  - {bc: customerNumber, dataverse: new_accountid, lookup: CUSTOMER}
"""


PRIORITY = """
bc: priority
dataverse: new_priority
option_map: {Low: 1, Normal: 2, High: 3}
"""


def _document(*extra_fields: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(default_mapping_file().read_text())
    project = yaml.safe_load(PROJECT)
    project["fields"].extend(yaml.safe_load(f) for f in extra_fields)
    document["mappings"]["PROJECT"] = project
    return document


@contextlib.asynccontextmanager
async def _custom_stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, tmp_path: Path, *fields: str
) -> AsyncIterator[Stack]:
    custom = tmp_path / "custom.yaml"
    custom.write_text(CUSTOM, encoding="utf-8")
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers,
        state_dsn=state_dsn,
        topic_prefix=topic_prefix,
        custom=custom,
        mappings_document=_document(*fields),
    ) as s:
        yield s


@pytest.fixture
async def stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with _custom_stack(infra, state_dsn, topic_prefix, tmp_path) as s:
        yield s


@pytest.fixture
async def priority_stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """PROJECT maps the priority choice through an option map too."""
    async with _custom_stack(infra, state_dsn, topic_prefix, tmp_path, PRIORITY) as s:
        yield s


@pytest.fixture
async def ops(stack: Stack) -> AsyncIterator[Operations]:
    async with _ops(stack) as operations:
        yield operations


@contextlib.asynccontextmanager
async def _ops(stack: Stack) -> AsyncIterator[Operations]:
    publisher = KafkaPublisher(KafkaConnection.from_settings(stack.settings))
    await publisher.start()
    try:
        yield Operations(
            JobStore(stack.pool), publisher, Codec(), topics_for(stack.settings), SystemClock()
        )
    finally:
        await publisher.stop()


def _one(rows: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(rows) == 1, f"{what}: {len(rows)} rows"
    return rows[0]


async def test_custom_table_and_page_sync_both_ways(stack: Stack, ops: Operations) -> None:
    customer = next(c for c in await stack.bc_rows("customers") if c["blocked"] == " ")
    account = (
        await stack.dv_rows(
            "accounts",
            "?$filter=statecode eq 0 and customertypecode eq 3 and accountnumber ne null"
            "&$top=1&$orderby=accountnumber desc",
        )
    )[0]
    await stack.bc_post(
        "projects",
        {"code": "P-BC-1", "description": "Fit-out", "customerNumber": customer["number"]},
    )
    await stack.dv_post(
        "new_projects",
        {
            "new_code": "P-DV-1",
            "new_name": "Survey",
            "new_AccountId@odata.bind": f"/accounts({account['accountid']})",
        },
    )
    # No name: BC has no null text, so the page's description is written blank.
    await stack.dv_post("new_projects", {"new_code": "P-DV-2"})
    await stack.start()

    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    jobs = {(j.mapping, j.direction): j.counts for j in progress.jobs}
    assert jobs[("PROJECT", "to_integration")]["inserted"] == 1
    assert jobs[("PROJECT", "from_integration")]["inserted"] == 2
    assert jobs[("PROJECT", "to_integration")]["failed"] == 0
    assert jobs[("PROJECT", "from_integration")]["failed"] == 0

    customers = await stack.couplings("CUSTOMER")
    sent = _one(await stack.dv_rows("new_projects", "?$filter=new_code eq 'P-BC-1'"), "sent")
    assert sent["new_name"] == "Fit-out"
    assert sent["_new_accountid_value"] == customers[customer["id"]]
    received = _one(await stack.bc_rows("projects", "?$filter=code eq 'P-DV-1'"), "received")
    assert received["description"] == "Survey"
    bc_customer = {dv: bc for bc, dv in customers.items()}[account["accountid"]]
    numbers = {c["id"]: c["number"] for c in await stack.bc_rows("customers")}
    assert received["customerNumber"] == numbers[bc_customer]
    unnamed = _one(await stack.bc_rows("projects", "?$filter=code eq 'P-DV-2'"), "unnamed")
    assert (unnamed["description"], unnamed["customerNumber"]) == ("", "")

    # Later changes on either side, picked up by capture on the custom sets; the
    # project moves to another customer, found again through CUSTOMER's couplings.
    other = next(
        c
        for c in await stack.bc_rows("customers")
        if c["id"] in customers and c["id"] != customer["id"]
    )
    await stack.bc_patch(
        "projects",
        sent_bc_id(await stack.bc_rows("projects"), "P-BC-1"),
        {"description": "Fit-out, phase 2", "customerNumber": other["number"]},
    )
    await stack.dv_patch(
        "new_projects",
        received_dv_id(await stack.dv_rows("new_projects"), "P-DV-1"),
        {"new_name": "Survey, revised"},
    )

    async def moved() -> bool:
        dv = {r["new_code"]: r for r in await stack.dv_rows("new_projects")}
        bc = {r["code"]: r for r in await stack.bc_rows("projects")}
        return (
            dv["P-BC-1"]["new_name"] == "Fit-out, phase 2"
            and dv["P-BC-1"]["_new_accountid_value"] == customers[other["id"]]
            and bc["P-DV-1"]["description"] == "Survey, revised"
        )

    await wait_for(moved, what="the changed projects on the other side")


def sent_bc_id(rows: list[dict[str, Any]], code: str) -> str:
    return str(next(r["id"] for r in rows if r["code"] == code))


def received_dv_id(rows: list[dict[str, Any]], code: str) -> str:
    return str(next(r["new_projectid"] for r in rows if r["new_code"] == code))


async def _cli(stack: Stack, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        *args,
        env=stack.environment(
            TABLESYNC_BC__API_ROUTES=json.dumps(stack.settings.bc.api_routes),
            TABLESYNC_LOG_LEVEL="warning",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_option_map_is_proposed_from_the_labels(stack: Stack) -> None:
    code, out, err = await _cli(
        stack, "mappings", "propose-options", "projects", "priority", "new_projects", "new_priority"
    )
    assert code == 0, err
    assert "option_map:" in out
    for line in ('"Normal": 2  # Normal', '"Low": 1  # Low', '"High": 3  # High'):
        assert line in out
    assert "BC 'Urgent' has no Dataverse choice" in out
    assert "Dataverse 4 (Critical) has no BC member" in out
    code, out, err = await _cli(
        stack,
        "mappings",
        "propose-options",
        "projects",
        "description",
        "new_projects",
        "new_priority",
    )
    assert code != 0
    assert "projects.description is a Edm.String, not an option field" in err


async def test_choices_travel_through_the_option_map_and_a_stray_value_is_an_error(
    priority_stack: Stack,
) -> None:
    stack = priority_stack
    for code, priority in (("P-HIGH", "High"), ("P-URGENT", "Urgent")):
        await stack.bc_post("projects", {"code": code, "description": code, "priority": priority})
    for code, choice in (("P-LOW", 1), ("P-CRITICAL", 4)):
        await stack.dv_post(
            "new_projects", {"new_code": code, "new_name": code, "new_priority": choice}
        )
    await stack.start()

    async with _ops(stack) as ops:
        progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    jobs = {(j.mapping, j.direction): j.counts for j in progress.jobs}
    assert (
        jobs[("PROJECT", "to_integration")]["inserted"],
        jobs[("PROJECT", "to_integration")]["failed"],
    ) == (1, 1)
    assert (
        jobs[("PROJECT", "from_integration")]["inserted"],
        jobs[("PROJECT", "from_integration")]["failed"],
    ) == (1, 1)
    dv = {r["new_code"]: r for r in await stack.dv_rows("new_projects")}
    bc = {r["code"]: r for r in await stack.bc_rows("projects")}
    assert dv["P-HIGH"]["new_priority"] == 3
    assert bc["P-LOW"]["priority"] == "Low"
    assert "P-URGENT" not in dv and "P-CRITICAL" not in bc

    code, out, err = await _cli(stack, "errors", "--mapping", "PROJECT", "--json")
    assert code == 0, err
    messages = sorted(row["message"] for row in json.loads(out))
    assert len(messages) == 2, messages
    assert any("priority value 'Urgent' has no option mapping" in m for m in messages), messages
    assert any("new_priority value 4 has no option mapping" in m for m in messages), messages
