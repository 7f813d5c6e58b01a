"""Custom tables, columns and API pages from a customization file: in the metadata and in
the data API alike."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from tablesync.emulators import seed
from tablesync.emulators.bc.app import create_app as create_bc_app
from tablesync.emulators.common.custom import CustomError, load_customizations
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.schema import ensure_schema
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse.app import create_app as create_dataverse_app
from tablesync.emulators.dataverse.specs import dataverse_specs
from tablesync.settings import EmulatorSettings, Settings, with_database
from tests.conftest import worker_database
from tests.emulators.conftest import CLIENT_TIMEOUT_S, TOKEN, BcEmulator, Emulator

pytestmark = pytest.mark.integration

CRM = "Microsoft.Dynamics.CRM"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
CUSTOM_YAML = """
dataverse:
  option_sets:
    - name: new_priority
      display_name: Priority
      options: {1: Low, 2: Normal, 3: High}
  tables:
    - logical_name: new_project
      entity_set: new_projects
      display_name: Project
      display_collection_name: Projects
      primary_name: new_name
      columns:
        - {name: new_name, type: string, max_length: 100, required: true}
        - {name: new_budget, type: money}
        - {name: new_stage, type: picklist, options: {100000000: Planned, 100000001: Running}}
        - {name: new_priority, type: picklist, option_set: new_priority}
        - {name: new_accountid, type: lookup, target: account}
  columns:
    account:
      - {name: new_tier, type: string, max_length: 10}
bc:
  pages:
    - route: contoso/projects/v1.0
      entity_set: projects
      entity_name: project
      fields:
        - {name: code, type: string, max_length: 20, required: true}
        - {name: description, type: string, max_length: 50}
        - {name: budget, type: decimal}
        - {name: status, type: enum, options: [Open, In Progress, Closed]}
        - {name: startDate, type: date}
"""


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("custom") / "custom.yaml"
    path.write_text(CUSTOM_YAML, encoding="utf-8")
    return path


def _config(infra: Any, side: str, custom_file: Path) -> EmulatorConfig:
    return EmulatorConfig(
        dsn=with_database(infra.database_dsn, worker_database(f"tablesync_emutest_custom_{side}")),
        token=TOKEN,
        requests_per_window=1_000_000,
        custom=load_customizations(custom_file),
    )


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=CLIENT_TIMEOUT_S)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def custom_bc(infra: Any, custom_file: Path) -> AsyncIterator[BcEmulator]:
    config = _config(infra, "bc", custom_file)
    async with BackgroundServer(create_bc_app(config)) as url, _client() as client:
        companies = await client.get(f"{url}/BC/api/v2.0/companies")
        company = companies.json()["value"][0]["id"]
        emulator = BcEmulator(url, "/BC/api/contoso/projects/v1.0", client, config.dsn, company)
        await emulator.reset()
        yield emulator


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def custom_dv(infra: Any, custom_file: Path) -> AsyncIterator[Emulator]:
    config = _config(infra, "dataverse", custom_file)
    async with BackgroundServer(create_dataverse_app(config)) as url, _client() as client:
        emulator = Emulator(url, "/api/data/v9.2", client, config.dsn)
        await emulator.reset()
        yield emulator


# ---------------------------------------------------------------- Dataverse


async def test_custom_table_in_the_definitions(custom_dv: Emulator) -> None:
    dv = custom_dv
    response = await dv.client.get(f"{dv.api}/EntityDefinitions(LogicalName='new_project')")
    assert response.status_code == 200, response.text
    table = response.json()
    assert table["EntitySetName"] == "new_projects"
    assert table["PrimaryIdAttribute"] == "new_projectid"
    assert table["PrimaryNameAttribute"] == "new_name"
    assert table["IsCustomEntity"] is True
    assert table["DisplayName"]["UserLocalizedLabel"]["Label"] == "Project"
    base = f"{dv.api}/EntityDefinitions(LogicalName='new_project')/Attributes"
    attributes = {a["LogicalName"]: a for a in (await dv.client.get(base)).json()["value"]}
    assert attributes["new_name"]["MaxLength"] == 100
    assert attributes["new_name"]["IsCustomAttribute"] is True
    assert attributes["new_name"]["RequiredLevel"]["Value"] == "SystemRequired"
    assert attributes["new_budget"]["AttributeType"] == "Money"
    assert attributes["new_accountid"]["Targets"] == ["account"]
    assert attributes["createdon"]["IsCustomAttribute"] is False
    picklists = await dv.client.get(
        f"{base}/{CRM}.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet,GlobalOptionSet"},
    )
    by_name = {a["LogicalName"]: a for a in picklists.json()["value"]}
    assert by_name["new_stage"]["GlobalOptionSet"] is None
    assert [o["Value"] for o in by_name["new_stage"]["OptionSet"]["Options"]] == [
        100000000,
        100000001,
    ]
    priority = by_name["new_priority"]["GlobalOptionSet"]
    assert priority["Name"] == "new_priority" and priority["IsGlobal"] is True
    tier = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_tier')"
    )
    assert tier.json()["MaxLength"] == 10 and tier.json()["IsCustomAttribute"] is True
    custom_only = await dv.client.get(
        f"{dv.api}/EntityDefinitions",
        params={"$select": "LogicalName", "$filter": "IsCustomEntity eq true"},
    )
    assert [t["LogicalName"] for t in custom_only.json()["value"]] == ["new_project"]
    owned = await dv.client.get(
        f"{dv.api}/EntityDefinitions",
        params={
            "$select": "LogicalName",
            "$filter": f"OwnershipType eq {CRM}.OwnershipTypes'OrganizationOwned'",
        },
    )
    assert sorted(t["LogicalName"] for t in owned.json()["value"]) == [
        "product",
        "transactioncurrency",
        "uomschedule",
    ]
    choices = await dv.client.get(
        base,
        params={
            "$select": "LogicalName",
            "$filter": f"AttributeType eq {CRM}.AttributeTypeCode'Picklist' "
            "and IsCustomAttribute eq true",
        },
    )
    assert sorted(a["LogicalName"] for a in choices.json()["value"]) == [
        "new_priority",
        "new_stage",
    ]
    metadata = ET.fromstring((await dv.client.get(f"{dv.api}/$metadata")).content)
    project = metadata.find(f".//{EDM}EntityType[@Name='new_project']")
    assert project is not None
    assert project.find(f"{EDM}Property[@Name='new_budget']") is not None


async def test_global_option_set_definitions(custom_dv: Emulator) -> None:
    dv = custom_dv
    listed = await dv.client.get(f"{dv.api}/GlobalOptionSetDefinitions")
    assert [o["Name"] for o in listed.json()["value"]] == ["new_priority"]
    one = await dv.client.get(f"{dv.api}/GlobalOptionSetDefinitions(Name='new_priority')")
    assert one.status_code == 200
    labels = [o["Label"]["UserLocalizedLabel"]["Label"] for o in one.json()["Options"]]
    assert labels == ["Low", "Normal", "High"]
    by_id = await dv.client.get(f"{dv.api}/GlobalOptionSetDefinitions({one.json()['MetadataId']})")
    assert by_id.json()["Name"] == "new_priority"
    missing = await dv.client.get(f"{dv.api}/GlobalOptionSetDefinitions(Name='nope')")
    assert missing.status_code == 404


async def test_custom_table_is_written_read_filtered_and_tracked(custom_dv: Emulator) -> None:
    dv = custom_dv
    account = await dv.client.post(
        f"{dv.api}/accounts", json={"name": "Fabrikam", "new_tier": "gold"}
    )
    assert account.status_code == 204, account.text
    account_url = account.headers["OData-EntityId"]
    account_id = account_url.rsplit("(", 1)[1].rstrip(")")
    tracked = await dv.client.get(
        f"{dv.api}/new_projects", headers={"Prefer": "odata.track-changes"}
    )
    assert tracked.status_code == 200, tracked.text
    delta = tracked.json()["@odata.deltaLink"]
    created = await dv.client.post(
        f"{dv.api}/new_projects",
        json={
            "new_name": "Rollout",
            "new_budget": 1200.5,
            "new_stage": 100000001,
            "new_accountid@odata.bind": f"/accounts({account_id})",
        },
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["_new_accountid_value"] == account_id
    assert project["new_budget"] == 1200.5
    missing = await dv.client.post(f"{dv.api}/new_projects", json={"new_budget": 1})
    assert missing.status_code == 400
    too_long = await dv.client.post(f"{dv.api}/new_projects", json={"new_name": "x" * 101})
    assert too_long.status_code == 400
    for column, value in (("new_stage", 5), ("new_priority", 4)):
        outside = await dv.client.post(
            f"{dv.api}/new_projects", json={"new_name": "Outside", column: value}
        )
        assert outside.status_code == 400, outside.text
        assert "Accepted Values" in outside.json()["error"]["message"]
    for index in range(3):
        more = await dv.client.post(f"{dv.api}/new_projects", json={"new_name": f"Extra {index}"})
        assert more.status_code == 204
    filtered = await dv.client.get(
        f"{dv.api}/new_projects",
        params={"$filter": "new_stage eq 100000001", "$select": "new_name"},
    )
    assert [r["new_name"] for r in filtered.json()["value"]] == ["Rollout"]
    paged = await dv.client.get(
        f"{dv.api}/new_projects",
        params={"$orderby": "new_name", "$select": "new_name"},
        headers={"Prefer": "odata.maxpagesize=3"},
    )
    assert len(paged.json()["value"]) == 3 and "@odata.nextLink" in paged.json()
    key = project["new_projectid"]
    updated = await dv.client.patch(
        f"{dv.api}/new_projects({key})", json={"new_name": "Rollout II"}, headers={"If-Match": "*"}
    )
    assert updated.status_code == 204, updated.text
    changes = await dv.client.get(delta)
    assert changes.status_code == 200, changes.text
    names = {r.get("new_name") for r in changes.json()["value"]}
    assert {"Rollout II", "Extra 0", "Extra 1", "Extra 2"} <= names
    deleted = await dv.client.delete(f"{dv.api}/new_projects({key})")
    assert deleted.status_code == 204
    gone = await dv.client.get(f"{dv.api}/new_projects({key})")
    assert gone.status_code == 404
    tier = await dv.client.get(account_url, params={"$select": "new_tier"})
    assert tier.json()["new_tier"] == "gold"


# ---------------------------------------------------------------- BC


async def test_custom_api_page_in_its_metadata(custom_bc: BcEmulator) -> None:
    bc = custom_bc
    response = await bc.client.get(f"{bc.api}/$metadata")
    assert response.status_code == 200
    schema = ET.fromstring(response.content).find(f".//{EDM}Schema")
    assert schema is not None
    project = schema.find(f"{EDM}EntityType[@Name='project']")
    assert project is not None
    code = project.find(f"{EDM}Property[@Name='code']")
    assert code is not None and code.get("MaxLength") == "20"
    status = project.find(f"{EDM}Property[@Name='status']")
    assert status is not None
    enum = schema.find(f"{EDM}EnumType[@Name='{(status.get('Type') or '').split('.')[-1]}']")
    assert enum is not None
    assert [m.get("Name") for m in enum] == ["Open", "In_x0020_Progress", "Closed"]
    standard = await bc.client.get(f"{bc.url}/BC/api/v2.0/$metadata")
    assert b'Name="project"' not in standard.content


async def test_custom_api_page_is_written_read_and_paged(custom_bc: BcEmulator) -> None:
    bc = custom_bc
    url = bc.set_url("projects")
    created = await bc.client.post(
        url, json={"code": "P1", "description": "Rollout", "budget": 99.5, "status": "Closed"}
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["startDate"] == "0001-01-01"
    assert project["lastModifiedDateTime"].endswith("Z")
    refused = await bc.client.post(url, json={"code": "P2", "status": "Lost"})
    assert refused.status_code == 400
    blank = await bc.client.post(url, json={"description": "no code"})
    assert blank.status_code == 400
    for index in range(2, 6):
        more = await bc.client.post(url, json={"code": f"P{index}"})
        assert more.status_code == 201, more.text
    page = await bc.client.get(
        url, params={"$orderby": "code", "$top": "2", "$skip": "1", "$select": "code"}
    )
    assert [r["code"] for r in page.json()["value"]] == ["P2", "P3"]
    closed = await bc.client.get(url, params={"$filter": "status eq 'Closed'"})
    assert [r["code"] for r in closed.json()["value"]] == ["P1"]
    key = project["id"]
    patched = await bc.client.patch(
        bc.set_url("projects", key), json={"budget": 100}, headers={"If-Match": "*"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["lastModifiedDateTime"] >= project["lastModifiedDateTime"]
    assert (
        await bc.client.delete(bc.set_url("projects", key), headers={"If-Match": "*"})
    ).status_code == 204
    missing = await bc.client.get(bc.set_url("projects", key))
    assert missing.status_code == 404
    assert "Project" in missing.json()["error"]["message"]
    # Not on the standard route.
    other = await bc.client.get(f"{bc.url}/BC/api/v2.0/companies({bc.company})/projects")
    assert other.status_code == 404


# ---------------------------------------------------------------- the file itself


def test_a_bad_customization_file_is_refused_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "dataverse:\n  tables:\n    - {logical_name: x, entity_set: xs, primary_name: n, "
        "columns: [{name: n, type: picklist}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(CustomError, match="needs either options or option_set"):
        load_customizations(path)
    path.write_text("dataverse:\n  columns:\n    lead: [{name: a, type: string}]\n", "utf-8")
    with pytest.raises(CustomError, match="lead"):
        dataverse_specs(load_customizations(path))
    path.write_text("dataverse:\n  columns:\n    account: [{name: name, type: string}]\n", "utf-8")
    with pytest.raises(CustomError, match="already has a column 'name'"):
        dataverse_specs(load_customizations(path))
    path.write_text(
        "bc:\n  pages:\n    - {route: v2.0, entity_set: a, entity_name: a, fields: []}\n"
    )
    with pytest.raises(CustomError, match="route"):
        load_customizations(path)


def test_the_emulator_setting_names_the_file(
    custom_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABLESYNC_EMULATOR__CUSTOM", str(custom_file))
    config = EmulatorConfig.from_settings(Settings(), "dataverse")
    assert [t.logical_name for t in config.custom.dataverse.tables] == ["new_project"]
    assert [p.entity_set for p in config.custom.bc.pages] == ["projects"]
    plain = EmulatorConfig.from_settings(Settings(emulator=EmulatorSettings()), "bc")
    assert plain.custom.bc.pages == ()


async def test_seeding_keeps_the_custom_tables_of_the_emulator(
    custom_dv: Emulator, custom_file: Path
) -> None:
    custom = load_customizations(custom_file)
    report = await seed.seed_demo("dataverse", custom_dv.dsn, wipe=True, custom=custom)
    assert report.rows["accounts"] > 0
    conn = await asyncpg.connect(custom_dv.dsn)
    try:
        # The emulator's next start finds its own tables and keeps the seeded rows.
        assert await ensure_schema(conn, dataverse_specs(custom)) is False
    finally:
        await conn.close()
    dv = custom_dv
    accounts = await dv.client.get(f"{dv.api}/accounts", params={"$select": "name,new_tier"})
    assert len(accounts.json()["value"]) == report.rows["accounts"]
    created = await dv.client.post(f"{dv.api}/new_projects", json={"new_name": "After seed"})
    assert created.status_code == 204, created.text
    await seed.reset("dataverse", dv.dsn, custom=custom)
    assert (await dv.client.get(f"{dv.api}/new_projects")).json()["value"] == []
