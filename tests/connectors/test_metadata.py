"""Both connectors describe their service from its metadata: the catalog's tables and
what a customization file adds, over real sockets to the emulators."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.adapters.odata import BcApi, DataverseApi
from tablesync.cli.main import app
from tablesync.core.metadata import Option, TableInfo
from tablesync.emulators.bc import create_app as bc_app
from tablesync.emulators.common.custom import load_customizations
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse import create_app as dataverse_app
from tablesync.errors import ApiError
from tablesync.settings import DEFAULT_TOKEN, with_database
from tests.conftest import InfraEndpoints, worker_database
from tests.connectors.conftest import BC_ROOT, DATAVERSE_ROOT, Emulators

pytestmark = pytest.mark.integration

CUSTOM_YAML = """
dataverse:
  columns:
    account:
      - {name: new_tier, type: string, max_length: 10}
      - {name: new_segment, type: picklist, options: {100000000: Small, 100000001: Large}}
bc:
  pages:
    - route: contoso/projects/v1.0
      entity_set: projects
      entity_name: project
      fields:
        - {name: code, type: string, max_length: 20, required: true}
        - {name: status, type: enum, options: [Open, In Progress, Closed]}
"""


@dataclass(frozen=True)
class Described:
    emulators: Emulators
    bc: BcApi
    dataverse: DataverseApi


@pytest.fixture(scope="module")
async def described(
    infra: InfraEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Described]:
    path = tmp_path_factory.mktemp("custom") / "custom.yaml"
    path.write_text(CUSTOM_YAML, encoding="utf-8")
    custom = load_customizations(path)

    def config(side: str) -> EmulatorConfig:
        dsn = with_database(
            infra.database_dsn, worker_database(f"tablesync_connectors_meta_{side}")
        )
        return EmulatorConfig(
            dsn=dsn, token=DEFAULT_TOKEN, requests_per_window=1_000_000, custom=custom
        )

    async with (
        BackgroundServer(bc_app(config("bc"))) as bc_url,
        BackgroundServer(dataverse_app(config("dataverse"))) as dv_url,
    ):
        running = Emulators(bc_url, dv_url)
        for side in ("bc", "dataverse"):
            await running.control(side, "POST", "reset")
        bc = BcApi(running.settings("bc"))
        dataverse = DataverseApi(running.settings("dataverse"))
        try:
            yield Described(running, bc, dataverse)
        finally:
            await bc.aclose()
            await dataverse.aclose()


def _one(tables: list[TableInfo]) -> TableInfo:
    assert len(tables) == 1, [t.entity_set for t in tables]
    return tables[0]


async def test_dataverse_describes_account_with_its_custom_columns(described: Described) -> None:
    account = _one(await described.dataverse.describe("accounts"))
    assert (account.name, account.entity_set, account.key) == ("account", "accounts", "accountid")
    assert account.primary_name == "name" and not account.custom and account.detailed
    name = account.field("name")
    assert name is not None and name.type == "String" and name.max_length == 160
    assert not name.custom and not name.read_only
    key = account.field("accountid")
    assert key is not None and key.key and not key.updatable
    modified = account.field("modifiedon")
    assert modified is not None and modified.read_only
    tier = account.field("new_tier")
    assert tier is not None and tier.custom and tier.max_length == 10
    segment = account.field("new_segment")
    assert segment is not None and segment.type == "Picklist"
    assert segment.options == (Option(100000000, "Small"), Option(100000001, "Large"))
    kind = account.field("customertypecode")
    assert kind is not None and Option(3, "Customer") in kind.options
    state = account.field("statecode")
    assert state is not None and [o.value for o in state.options] == [0, 1]
    contact = account.field("primarycontactid")
    assert contact is not None and contact.type == "Lookup" and contact.targets == ("contact",)
    # By logical name too; asked again, from the cache until refreshed.
    assert await described.dataverse.describe("account") == [account]
    before = described.dataverse.stats.requests
    assert await described.dataverse.describe("accounts") == [account]
    assert described.dataverse.stats.requests == before
    assert await described.dataverse.describe("accounts", refresh=True) == [account]
    assert described.dataverse.stats.requests > before
    assert await described.dataverse.describe("nosuchtable") == []


async def test_dataverse_lists_its_tables(described: Described) -> None:
    tables = {t.entity_set: t for t in await described.dataverse.describe()}
    assert {"accounts", "contacts", "systemusers", "transactioncurrencies"} <= set(tables)
    assert not tables["accounts"].detailed
    assert tables["accounts"].field("new_tier") is not None


async def test_bc_describes_customers_and_a_custom_page(described: Described) -> None:
    customers = _one(await described.bc.describe("customers"))
    assert (customers.name, customers.key, customers.route) == ("customer", "id", "v2.0")
    assert not customers.custom
    display = customers.field("displayName")
    assert display is not None and display.type == "Edm.String" and display.max_length == 100
    blocked = customers.field("blocked")
    assert blocked is not None and blocked.type == "Enum"
    assert [o.value for o in blocked.options] == [" ", "Ship", "Invoice", "All"]
    identity = customers.field("id")
    assert identity is not None and identity.key and identity.read_only
    # The catalog's own custom page is read without being named.
    salespeople = _one(await described.bc.describe("salespeople"))
    assert salespeople.custom and salespeople.route == "tablesync/integration/v1.0"
    assert await described.bc.describe("projects") == []
    projects = _one(await described.bc.describe("projects", routes=["contoso/projects/v1.0"]))
    assert projects.custom and projects.name == "project"
    status = projects.field("status")
    assert status is not None
    assert [o.value for o in status.options] == ["Open", "In Progress", "Closed"]
    code = projects.field("code")
    assert code is not None and code.max_length == 20
    # A route asked for by name must be served.
    with pytest.raises(ApiError) as refused:
        await described.bc.describe(routes=["nobody/nothing/v1.0"])
    assert refused.value.status == 404


def _env(emulators: Emulators) -> dict[str, str]:
    return {
        "TABLESYNC_BC__BASE_URL": emulators.bc + BC_ROOT,
        "TABLESYNC_DATAVERSE__BASE_URL": emulators.dataverse + DATAVERSE_ROOT,
        "TABLESYNC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }


async def test_cli_catalog_of_account_as_json(described: Described) -> None:
    # The emulators answer on this event loop: the command runs its own in a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["catalog", "dataverse", "account", "--json"],
        env=_env(described.emulators),
    )
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert table["entity_set"] == "accounts" and table["builtin"] is True
    fields = {f["name"]: f for f in table["fields"]}
    assert fields["name"]["max_length"] == 160 and fields["name"]["builtin"] is True
    assert fields["new_tier"]["builtin"] is False and fields["new_tier"]["custom"] is True
    assert fields["primarycontactid"]["targets"] == ["contact"]
    assert {"value": 3, "label": "Customer"} in fields["customertypecode"]["options"]
    assert fields["modifiedon"]["read_only"] is True


async def test_cli_catalog_lists_both_sides(described: Described) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["catalog", "--json"], env=_env(described.emulators)
    )
    assert result.exit_code == 0, result.output
    rows = {(r["side"], r["entity_set"]): r for r in json.loads(result.stdout)}
    assert rows[("bc", "customers")]["builtin"] is True
    assert rows[("bc", "salespeople")]["custom"] is True
    assert rows[("dataverse", "accounts")]["fields"] > 0
    missing = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["catalog", "dataverse", "nosuchtable"],
        env=_env(described.emulators),
    )
    assert missing.exit_code == 2 and "nosuchtable" in missing.stderr
    text = await asyncio.to_thread(
        CliRunner().invoke, app, ["catalog", "dataverse", "account"], env=_env(described.emulators)
    )
    assert text.exit_code == 0, text.output
    lines = {line.split("│")[1].strip(): line for line in text.stdout.splitlines() if "│" in line}
    assert "160" in lines["name"] and "yes" in lines["name"]
    assert "custom" in lines["new_tier"] and "yes" not in lines["new_tier"]
    assert "100000000=Small" in lines["new_segment"]
    assert "read-only" in lines["modifiedon"]


async def test_the_default_mappings_agree_with_the_services(described: Described) -> None:
    default = Path(str(default_mapping_file()))
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["mappings", "validate", str(default), "--online"],
        env=_env(described.emulators),
    )
    assert result.exit_code == 0, result.output
    assert "checked against both services" in result.stdout


async def test_mappings_validate_online(described: Described, tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    # Valid against the built-in catalog; the live metadata says more.
    path.write_text(
        """
mappings:
  CUSTOMER:
    bc_table: customers
    dataverse_table: accounts
    direction: bidirectional
    fields:
      - {bc: displayName, dataverse: name, max_length: 100}
      - {bc: phoneNumber, dataverse: telephone1, max_length: 500}
      - {bc: blocked, dataverse: customertypecode, option_map: {"Ship": 3, "Nope": 99}}
""",
        encoding="utf-8",
    )
    env = _env(described.emulators)
    offline = await asyncio.to_thread(
        CliRunner().invoke, app, ["mappings", "validate", str(path)], env=env
    )
    assert offline.exit_code == 0, offline.output
    online = await asyncio.to_thread(
        CliRunner().invoke, app, ["mappings", "validate", str(path), "--online"], env=env
    )
    assert online.exit_code == 2, online.output
    errors = online.stderr.splitlines()
    assert errors == [
        "CUSTOMER: dataverse accounts.telephone1: max_length 500 is larger than the column's 50",
        "CUSTOMER: bc customers.phoneNumber: max_length 500 is larger than the column's 30",
        "CUSTOMER: bc customers.blocked: option_map value 'Nope' is not one of its options "
        "(' ', 'Ship', 'Invoice', 'All')",
        "CUSTOMER: dataverse accounts.customertypecode: option_map value 99 is not one of its "
        "options (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)",
    ], errors
