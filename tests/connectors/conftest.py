"""Both API emulators on free ports of this machine, for the connectors' real-socket tests.

They run inside the test session's event loop and keep their rows in databases of their
own on the test PostgreSQL, emptied when the session starts. Tests tag the names of the
records they create, so they never see each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tablesync.adapters.odata import CountingSideApi, open_api
from tablesync.emulators.bc import create_app as bc_app
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse import create_app as dataverse_app
from tablesync.settings import DEFAULT_TOKEN, ApiSettings, with_database
from tests.conftest import InfraEndpoints, worker_database

BC_ROOT = "/BC/api/v2.0"
DATAVERSE_ROOT = "/api/data/v9.2"


@dataclass(frozen=True)
class Emulators:
    bc: str
    dataverse: str

    def settings(self, side: str, **overrides: Any) -> ApiSettings:
        root = self.bc + BC_ROOT if side == "bc" else self.dataverse + DATAVERSE_ROOT
        values: dict[str, Any] = {
            "base_url": root,
            "page_size": 50,
            "batch_size": 100,
            "max_retries": 4,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
            "timeout_s": 30.0,
        }
        values.update(overrides)
        return ApiSettings.model_validate(values)

    async def control(self, side: str, method: str, path: str, body: Any = None) -> Any:
        base = self.bc if side == "bc" else self.dataverse
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}, timeout=30
        ) as client:
            response = await client.request(method, f"{base}/_emulator/{path}", json=body)
            response.raise_for_status()
            return response.json() if response.content else None


@pytest.fixture(scope="session")
async def emulators(infra: InfraEndpoints) -> AsyncIterator[Emulators]:
    def config(side: str) -> EmulatorConfig:
        dsn = with_database(infra.database_dsn, worker_database(f"tablesync_connectors_{side}"))
        return EmulatorConfig(dsn=dsn, token=DEFAULT_TOKEN, requests_per_window=1_000_000)

    async with (
        BackgroundServer(bc_app(config("bc"))) as bc,
        BackgroundServer(dataverse_app(config("dataverse"))) as dataverse,
    ):
        running = Emulators(bc, dataverse)
        for side in ("bc", "dataverse"):
            await running.control(side, "POST", "reset")
        yield running


@pytest.fixture
def tag() -> str:
    """A prefix unique to the test, for the names of the records it creates."""
    return f"t{uuid.uuid4().hex[:10]}"


ApiFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def connect(emulators: Emulators) -> AsyncIterator[ApiFactory]:
    """``await connect(side, **settings)``: a connector, closed after the test."""
    opened: list[CountingSideApi] = []

    async def open_one(side: str, **overrides: Any) -> CountingSideApi:
        api = await open_api(side, emulators.settings(side, **overrides))  # type: ignore[arg-type]
        opened.append(api)
        return api

    yield open_one
    for api in opened:
        await api.aclose()


@pytest.fixture
async def faults(emulators: Emulators) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    """``await faults(side, status, count=N, retry_after=S)``; cleared after the test."""
    touched: set[str] = set()

    async def inject(side: str, status: int, **options: Any) -> None:
        touched.add(side)
        await emulators.control(side, "POST", "faults", {"status": status, **options})

    yield inject
    for side in touched:
        await emulators.control(side, "DELETE", "faults")
