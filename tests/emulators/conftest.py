"""Both emulators on real sockets in the test event loop, over their own test databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tablesync.emulators.bc.app import create_app as create_bc_app
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse.app import create_app as create_dataverse_app
from tablesync.settings import with_database
from tests.conftest import worker_database

TOKEN = "emulator-test-token"
BUDGET = 1_000_000
CLIENT_TIMEOUT_S = 60
"""Per request: the emulators share this event loop with the tests and a loaded machine."""


@dataclass
class Emulator:
    """One running emulator and an authorised client on its API root."""

    url: str
    root: str
    client: httpx.AsyncClient
    dsn: str

    @property
    def api(self) -> str:
        return self.url + self.root

    async def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, f"{self.url}/_emulator/{path}", **kwargs)

    async def reset(self) -> None:
        response = await self.control("POST", "reset")
        assert response.status_code == 204, response.text

    async def configure(self, **settings: object) -> None:
        response = await self.control("PATCH", "config", json=settings)
        assert response.status_code == 200, response.text


@dataclass
class BcEmulator(Emulator):
    company: str = ""

    def set_url(self, entity_set: str, key: str | None = None) -> str:
        url = f"{self.api}/companies({self.company})/{entity_set}"
        return url if key is None else f"{url}({key})"


def _config(dsn: str) -> EmulatorConfig:
    return EmulatorConfig(
        dsn=dsn, token=TOKEN, requests_per_window=BUDGET, window_s=5.0, max_page_size=5000
    )


@pytest.fixture(scope="session")
def emulator_dsns(infra: Any) -> dict[str, str]:
    return {
        side: with_database(infra.database_dsn, worker_database(f"tablesync_emutest_{side}"))
        for side in ("bc", "dataverse")
    }


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=CLIENT_TIMEOUT_S)


@pytest_asyncio.fixture(scope="session")
async def bc_server(emulator_dsns: dict[str, str]) -> AsyncIterator[BcEmulator]:
    async with BackgroundServer(create_bc_app(_config(emulator_dsns["bc"]))) as url, _client() as c:
        companies = await c.get(f"{url}/BC/api/v2.0/companies")
        company = companies.json()["value"][0]["id"]
        yield BcEmulator(url, "/BC/api/v2.0", c, emulator_dsns["bc"], company)


@pytest_asyncio.fixture(scope="session")
async def dataverse_server(emulator_dsns: dict[str, str]) -> AsyncIterator[Emulator]:
    app = create_dataverse_app(_config(emulator_dsns["dataverse"]))
    async with BackgroundServer(app) as url, _client() as c:
        yield Emulator(url, "/api/data/v9.2", c, emulator_dsns["dataverse"])


async def _fresh(emulator: Emulator) -> None:
    await emulator.reset()
    await emulator.control("DELETE", "faults")
    await emulator.control("DELETE", "short-listing")
    await emulator.control("DELETE", "stats")
    await emulator.configure(
        max_page_size=5000, requests_per_window=BUDGET, window_s=5.0, real_limits=None
    )


@pytest_asyncio.fixture
async def bc(bc_server: BcEmulator) -> AsyncIterator[BcEmulator]:
    """The BC emulator with empty tables and default tuning."""
    await _fresh(bc_server)
    yield bc_server
    await _fresh(bc_server)


@pytest_asyncio.fixture
async def dv(dataverse_server: Emulator) -> AsyncIterator[Emulator]:
    """The Dataverse emulator with empty tables (the integration user only)."""
    await _fresh(dataverse_server)
    yield dataverse_server
    await _fresh(dataverse_server)
