"""The BC connector in an environment of several companies: one connector per company."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tablesync.adapters.odata import BcApi, open_api
from tablesync.adapters.odata.factory import open_bc_companies
from tablesync.core.records import Create, Written
from tablesync.emulators.bc.app import create_app as bc_app
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.errors import ApiError, ConfigError
from tablesync.settings import DEFAULT_TOKEN, ApiSettings, with_database
from tests.conftest import InfraEndpoints
from tests.connectors.conftest import BC_ROOT

pytestmark = pytest.mark.integration

USA, CANADA = "CRONUS USA, Inc.", "CRONUS Canada, Inc."
SINCE_START = datetime.now(UTC) - timedelta(minutes=5)


@pytest.fixture(scope="module")
async def bc_url(infra: InfraEndpoints) -> AsyncIterator[str]:
    config = EmulatorConfig(
        dsn=with_database(infra.database_dsn, "tablesync_connectors_bc_companies"),
        token=DEFAULT_TOKEN,
        requests_per_window=1_000_000,
        bc_companies=(USA, CANADA),
    )
    async with BackgroundServer(bc_app(config)) as url:
        yield url + BC_ROOT


def _settings(url: str, **values: object) -> ApiSettings:
    return ApiSettings.model_validate({"base_url": url, "max_retries": 2, **values})


async def test_one_connector_per_company_each_reading_its_own(bc_url: str) -> None:
    listing = await open_api("bc", _settings(bc_url, company_name=USA))
    assert isinstance(listing, BcApi)
    try:
        known = {c.name: c.id for c in await listing.companies()}
    finally:
        await listing.aclose()
    # One by name, one by id (upper-cased: ids are matched in any case).
    usa, canada = await open_bc_companies(_settings(bc_url, companies=[USA, known[CANADA].upper()]))
    try:
        assert await usa.company_id() == known[USA]
        assert await canada.company_id() == known[CANADA]
        [made] = await canada.write("customers", [Create({"displayName": "Only in Canada"})])
        assert isinstance(made, Written) and made.row is not None

        seen_usa = [
            r.id async for page in usa.changed_since("customers", SINCE_START) for r in page
        ]
        seen_canada = [
            r.id async for page in canada.changed_since("customers", SINCE_START) for r in page
        ]
        assert made.row.id in seen_canada
        assert made.row.id not in seen_usa
    finally:
        await canada.aclose()
        # The first owns the HTTP client the others share: it still answered above.
        await usa.aclose()


async def test_an_unknown_company_in_the_list_fails_naming_it(bc_url: str) -> None:
    with pytest.raises(ApiError, match="'Nowhere Ltd' \\(TABLESYNC_BC__COMPANIES\\)"):
        await open_bc_companies(_settings(bc_url, companies=[USA, "Nowhere Ltd"]))


async def test_one_connector_from_settings_of_several_is_refused(bc_url: str) -> None:
    with pytest.raises(ConfigError, match="names 2 companies"):
        await open_api("bc", _settings(bc_url, companies=[USA, CANADA]))


async def test_a_list_of_one_is_the_single_company(bc_url: str) -> None:
    api = await open_api("bc", _settings(bc_url, companies=[CANADA]))
    named = await open_api("bc", _settings(bc_url, company_name=CANADA))
    try:
        assert isinstance(api, BcApi) and isinstance(named, BcApi)
        assert await api.company_id() == await named.company_id()
    finally:
        await api.aclose()
        await named.aclose()
