"""BC's company table in Dataverse (``bcbi_company``): rows stamped with their company
through ``bcbi_companyid``, and BC's default filter "this company, or none" over them."""

from __future__ import annotations

from typing import Any

import pytest

from tablesync.core.companies import COMPANY_LOOKUP, COMPANY_SET, COMPANY_VALUE, CompanyScope
from tablesync.core.filters import to_odata
from tests.emulators.conftest import Emulator

pytestmark = pytest.mark.integration

REPRESENTATION = {"Prefer": "return=representation"}


async def _post(dv: Emulator, entity_set: str, body: dict[str, object]) -> dict[str, Any]:
    response = await dv.client.post(f"{dv.api}/{entity_set}", json=body, headers=REPRESENTATION)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _company(dv: Emulator, name: str, bc_id: str) -> str:
    row = await _post(dv, COMPANY_SET, {"bcbi_name": name, "bcbi_externalid": bc_id})
    assert row["bcbi_name"] == name
    return str(row["bcbi_companyid"])


async def test_an_account_is_stamped_with_its_company(dv: Emulator) -> None:
    usa = await _company(dv, "CRONUS USA, Inc.", "6f0b7c8e-0000-4000-8000-000000000001")
    account = await _post(
        dv,
        "accounts",
        {"name": "Adatum", f"{COMPANY_LOOKUP}@odata.bind": f"/{COMPANY_SET}({usa})"},
    )

    assert account[COMPANY_VALUE] == usa
    read = await dv.client.get(
        f"{dv.api}/accounts({account['accountid']})", params={"$select": f"name,{COMPANY_VALUE}"}
    )
    assert read.status_code == 200, read.text
    assert read.json()[COMPANY_VALUE] == usa


async def test_the_default_filter_answers_a_companys_rows_and_the_unstamped(
    dv: Emulator,
) -> None:
    usa_bc, canada_bc = (
        "6f0b7c8e-0000-4000-8000-000000000001",
        "6f0b7c8e-0000-4000-8000-000000000002",
    )
    usa = await _company(dv, "CRONUS USA, Inc.", usa_bc)
    canada = await _company(dv, "CRONUS Canada, Inc.", canada_bc)
    for name, company in (("USA row", usa), ("Canada row", canada), ("No company", None)):
        body: dict[str, object] = {"name": name}
        if company is not None:
            body[f"{COMPANY_LOOKUP}@odata.bind"] = f"/{COMPANY_SET}({company})"
        await _post(dv, "accounts", body)

    scope = CompanyScope(usa_bc, usa)
    expr = scope.dataverse_filter(None)
    assert expr is not None
    listed = await dv.client.get(
        f"{dv.api}/accounts", params={"$filter": to_odata(expr), "$select": "name"}
    )

    assert listed.status_code == 200, listed.text
    assert sorted(r["name"] for r in listed.json()["value"]) == ["No company", "USA row"]
