"""Seeding: the demo set is consistent, synthetic rows carry valid references, and the CLI
drives it. How fast 100,000 rows per table load is measured by the benchmarks (bench/)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from typer.testing import CliRunner

from tablesync.cli.emulator import app
from tablesync.emulators.seed import (
    DEMO_USERS,
    demo_user_id,
    salesperson_codes,
    seed_demo,
    seed_synthetic,
)
from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration

SYNTHETIC_ROWS = 10_000


async def test_bc_demo_is_consistent(bc: BcEmulator) -> None:
    await seed_demo("bc", bc.dsn, wipe=True)
    customers = (await bc.client.get(bc.set_url("customers"))).json()["value"]
    vendors = (await bc.client.get(bc.set_url("vendors"))).json()["value"]
    contacts = (await bc.client.get(bc.set_url("contacts"))).json()["value"]
    currencies = {
        c["code"]: c["id"] for c in (await bc.client.get(bc.set_url("currencies"))).json()["value"]
    }
    assert {"EUR", "GBP", "CAD"} <= set(currencies)
    assert len(customers) == 10 and len(vendors) == 5 and len(contacts) == 15
    numbers = {c["number"]: c["displayName"] for c in customers + vendors}
    for contact in contacts:
        assert numbers[contact["companyNumber"]] == contact["companyName"]
        assert contact["contactBusinessRelation"] in ("Customer", "Vendor")
    for customer in customers:
        if customer["currencyCode"]:
            assert currencies[customer["currencyCode"]] == customer["currencyId"]
    assert [c["blocked"] for c in customers].count("All") == 1
    codes = sorted(c["salespersonCode"] for c in customers if c["salespersonCode"])
    assert codes == ["SP00001", "SP00002", "SP00003"]
    units = {u["code"]: u["id"] for u in await _all(bc, "unitsOfMeasure")}
    items = await _all(bc, "items")
    assert len(items) >= 24 and len(units) >= 4
    for item in items:
        assert units[item["baseUnitOfMeasureCode"]] == item["baseUnitOfMeasureId"]
    terms = {t["id"] for t in await _all(bc, "paymentTerms")}
    methods = {m["id"] for m in await _all(bc, "shipmentMethods")}
    assert terms and methods
    assert all(c["paymentTermsId"] in terms for c in customers)
    assert all(c["shipmentMethodId"] in methods for c in customers)
    assert all(v["paymentTermsId"] in terms for v in vendors)
    # The series goes on after the seeded numbers.
    created = await bc.client.post(bc.set_url("customers"), json={"displayName": "New"})
    assert created.json()["number"] == "C00011"


async def _all(bc: BcEmulator, entity_set: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await bc.client.get(bc.set_url(entity_set))).json()["value"]
    return rows


async def test_dataverse_demo_is_consistent(dv: Emulator) -> None:
    await seed_demo("dataverse", dv.dsn, wipe=True)
    users = (await dv.client.get(f"{dv.api}/systemusers")).json()["value"]
    people = [u for u in users if u["islicensed"] and not u["isdisabled"]]
    assert len(people) == len(DEMO_USERS) == 5
    assert len([u for u in users if u["isdisabled"]]) == 1
    assert any(u["accessmode"] == 4 and u["fullname"] == "tablesync integration" for u in users)
    (usd,) = (await dv.client.get(f"{dv.api}/transactioncurrencies")).json()["value"]
    assert (usd["isocurrencycode"], usd["exchangerate"]) == ("USD", 1.0)
    adatum = await dv.client.get(f"{dv.api}/accounts(accountnumber='C00001')")
    assert adatum.json()["name"] == "Adatum Corporation"
    assert adatum.json()["_primarycontactid_value"] is not None
    contacts = (await dv.client.get(f"{dv.api}/contacts")).json()["value"]
    accounts = {a["accountid"] for a in (await dv.client.get(f"{dv.api}/accounts")).json()["value"]}
    assert all(c["_parentcustomerid_value"] in accounts for c in contacts)
    (group,) = (await dv.client.get(f"{dv.api}/uomschedules")).json()["value"]
    (unit,) = (await dv.client.get(f"{dv.api}/uoms")).json()["value"]
    assert (group["name"], unit["name"]) == ("Default Unit", "Primary Unit")
    assert unit["_uomscheduleid_value"] == group["uomscheduleid"]
    for product in (await dv.client.get(f"{dv.api}/products")).json()["value"]:
        assert product["_defaultuomscheduleid_value"] == group["uomscheduleid"]
        assert product["_defaultuomid_value"] == unit["uomid"]
    # The salesperson codes follow the users' ids in sort order.
    codes = salesperson_codes()
    ordered = sorted((demo_user_id(f, n) for f, n, _ in DEMO_USERS), key=str)
    assert [codes[u] for u in ordered] == [f"SP0000{i}" for i in range(1, 6)]


async def test_synthetic_rows_carry_valid_references(bc: BcEmulator, dv: Emulator) -> None:
    for emulator, side in ((bc, "bc"), (dv, "dataverse")):
        started = time.perf_counter()
        report = await seed_synthetic(side, emulator.dsn, SYNTHETIC_ROWS, wipe=True)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        print(f"\nseeded {side}: {report.rows} in {seconds:.2f} s")
        assert all(rows == SYNTHETIC_ROWS for rows in report.rows.values())
    count = await dv.client.get(f"{dv.api}/contacts/$count")
    assert count.text == "5000"
    page = await bc.client.get(bc.set_url("contacts"), params={"$top": "3"})
    for contact in page.json()["value"]:
        customer = await bc.client.get(
            bc.set_url("customers"), params={"$filter": f"number eq '{contact['companyNumber']}'"}
        )
        assert customer.json()["value"][0]["displayName"] == contact["companyName"]
    await bc.reset()
    await dv.reset()


def test_cli_seeds_and_resets(
    monkeypatch: pytest.MonkeyPatch, emulator_dsns: dict[str, str]
) -> None:
    monkeypatch.setenv("TABLESYNC_EMULATOR__BC_DATABASE_URL", emulator_dsns["bc"])
    runner = CliRunner()
    seeded = runner.invoke(app, ["seed", "bc", "--demo", "--reset"])
    assert seeded.exit_code == 0, seeded.output
    assert "customers: 10 rows" in seeded.output
    again = runner.invoke(app, ["seed", "bc", "--demo"])
    assert again.exit_code == 2
    assert "--reset" in again.output
    both = runner.invoke(app, ["seed", "bc", "--demo", "--synthetic", "5"])
    assert both.exit_code == 2
    reset = runner.invoke(app, ["reset", "bc"])
    assert reset.exit_code == 0, reset.output
