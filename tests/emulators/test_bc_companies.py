"""A BC environment of several companies: each lists, numbers and keeps its own rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tablesync.emulators.bc.app import create_app as create_bc_app
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.settings import with_database
from tests.emulators.conftest import BUDGET, CLIENT_TIMEOUT_S, TOKEN

API = "/BC/api/v2.0"
NAMES = ("CRONUS USA, Inc.", "CRONUS Canada, Inc.")


@pytest_asyncio.fixture(scope="module")
async def two(infra: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    config = EmulatorConfig(
        dsn=with_database(infra.database_dsn, "tablesync_emutest_bc_companies"),
        token=TOKEN,
        requests_per_window=BUDGET,
        bc_companies=NAMES,
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        BackgroundServer(create_bc_app(config)) as url,
        httpx.AsyncClient(headers=headers, timeout=CLIENT_TIMEOUT_S) as client,
    ):
        reset = await client.post(f"{url}/_emulator/reset")
        assert reset.status_code == 204, reset.text
        yield url + API, client


async def _companies(api: str, client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.get(f"{api}/companies")
    assert response.status_code == 200, response.text
    return {c["name"]: c["id"] for c in response.json()["value"]}


async def test_companies_lists_each_one(two: tuple[str, httpx.AsyncClient]) -> None:
    api, client = two
    companies = await _companies(api, client)

    assert list(companies) == list(NAMES)
    assert len(set(companies.values())) == 2
    for name, company_id in companies.items():
        single = await client.get(f"{api}/companies({company_id})")
        assert single.status_code == 200, single.text
        assert single.json()["name"] == name


async def test_each_company_keeps_and_numbers_its_own_rows(
    two: tuple[str, httpx.AsyncClient],
) -> None:
    api, client = two
    companies = await _companies(api, client)
    usa, canada = (f"{api}/companies({companies[n]})/customers" for n in NAMES)

    made_usa = await client.post(usa, json={"displayName": "Adatum USA"})
    made_canada = await client.post(canada, json={"displayName": "Adatum Canada"})
    assert made_usa.status_code == made_canada.status_code == 201, made_canada.text
    # Each company has its number series: the same number names two customers.
    assert made_usa.json()["number"] == made_canada.json()["number"]

    listed_usa = (await client.get(usa)).json()["value"]
    listed_canada = (await client.get(canada)).json()["value"]
    assert [c["displayName"] for c in listed_usa] == ["Adatum USA"]
    assert [c["displayName"] for c in listed_canada] == ["Adatum Canada"]
    other = await client.get(f"{usa}({made_canada.json()['id']})")
    assert other.status_code == 404, other.text


async def test_a_batch_writes_in_the_company_of_each_request(
    two: tuple[str, httpx.AsyncClient],
) -> None:
    api, client = two
    companies = await _companies(api, client)
    canada = companies[NAMES[1]]
    body = {
        "requests": [
            {
                "id": "1",
                "method": "POST",
                "url": f"companies({canada})/customers",
                "headers": {"Content-Type": "application/json"},
                "body": {"displayName": "Batched Canada"},
            }
        ]
    }

    reply = await client.post(f"{api}/$batch", json=body)

    assert reply.status_code == 200, reply.text
    assert reply.json()["responses"][0]["status"] == 201
    names = {
        c["displayName"]
        for c in (await client.get(f"{api}/companies({canada})/customers")).json()["value"]
    }
    assert "Batched Canada" in names
    usa = companies[NAMES[0]]
    in_usa = (await client.get(f"{api}/companies({usa})/customers")).json()["value"]
    assert "Batched Canada" not in {c["displayName"] for c in in_usa}


async def test_a_reset_empties_every_company(two: tuple[str, httpx.AsyncClient]) -> None:
    api, client = two
    companies = await _companies(api, client)
    canada = f"{api}/companies({companies[NAMES[1]]})/customers"
    made = await client.post(canada, json={"displayName": "Gone after reset"})
    assert made.status_code == 201, made.text

    reset = await client.post(f"{api.removesuffix(API)}/_emulator/reset")

    assert reset.status_code == 204, reset.text
    assert (await client.get(canada)).json()["value"] == []
    assert await _companies(api, client) == companies
