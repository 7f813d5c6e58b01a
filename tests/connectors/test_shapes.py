"""Pure pieces: entity specs from the catalog, rows from API JSON, query text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tablesync.adapters.odata.base import id_chunks, id_filter, query
from tablesync.adapters.odata.entities import catalog_specs
from tablesync.adapters.odata.http import ODataHttp
from tablesync.adapters.odata.rows import to_row
from tablesync.core.filters import MAX_LENGTH, parse, to_odata
from tablesync.errors import ConfigError
from tests.connectors.fakes import api_settings


def test_bc_specs_put_custom_apis_beside_v2() -> None:
    specs = catalog_specs("bc", "/BC/api/v2.0")

    customers = specs("customers")
    salespeople = specs("salespeople")

    assert (customers.key, customers.stamp) == ("id", "lastModifiedDateTime")
    assert customers.route == "companies({company})/customers"
    assert salespeople.route == (
        "/BC/api/tablesync/integration/v1.0/companies({company})/salespeople"
    )


def test_dataverse_specs_name_key_stamp_and_modified_by() -> None:
    specs = catalog_specs("dataverse", "/api/data/v9.2")

    currencies = specs("transactioncurrencies")
    unknown = specs("new_widgets")

    assert (currencies.key, currencies.stamp) == ("transactioncurrencyid", "modifiedon")
    assert currencies.modified_by == "_modifiedby_value"
    assert (unknown.key, unknown.route) == ("new_widgetid", "new_widgets")


def test_rows_drop_annotations_and_structured_values() -> None:
    row = to_row(
        {
            "@odata.etag": 'W/"12"',
            "accountid": "AAAAAAAA-0000-0000-0000-000000000001",
            "modifiedon": "2025-03-01T10:00:00.1234567+01:00",
            "_modifiedby_value": "BBBBBBBB-0000-0000-0000-000000000002",
            "name": "Contoso",
            "revenue": 1.5,
            "_ownerid_value@OData.Community.Display.V1.FormattedValue": "Ann",
            "address": {"city": "Oslo"},
        },
        key="accountid",
        stamp="modifiedon",
        modified_by="_modifiedby_value",
    )

    assert row.id == "aaaaaaaa-0000-0000-0000-000000000001"
    assert row.modified_at == datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert row.etag == 'W/"12"'
    assert row.modified_by == "bbbbbbbb-0000-0000-0000-000000000002"
    assert set(row.fields) == {"accountid", "modifiedon", "_modifiedby_value", "name", "revenue"}


@pytest.mark.parametrize("key", ["id", "accountid", "transactioncurrencyid"])
def test_id_chunks_stay_inside_the_filter_grammar(key: str) -> None:
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(250)]

    chunks = id_chunks(key, ids)

    assert [i for chunk in chunks for i in chunk] == ids
    for chunk in chunks:
        text = to_odata(id_filter(key, chunk))  # type: ignore[arg-type]
        assert len(text) <= MAX_LENGTH
        assert parse(text) == id_filter(key, chunk)
        assert 1 <= len(chunk) <= 100
    # Full but for the last: as few requests as the limits allow.
    assert all(len(c) == len(chunks[0]) for c in chunks[:-1])
    assert len(chunks[0]) > (MAX_LENGTH // (len(key) + len(" eq  or ") + 36)) - 5


def test_query_text_escapes_what_servers_would_misread() -> None:
    text = query(
        "accounts", [("$filter", "name eq 'A&B+C' and modifiedon ge 2025-01-01T00:00:00+02:00")]
    )

    assert text == (
        "accounts?$filter=name%20eq%20'A%26B%2BC'%20and%20modifiedon%20ge%20"
        "2025-01-01T00:00:00%2B02:00"
    )


def test_client_credentials_need_all_their_settings() -> None:
    settings = api_settings(token_url="https://login.test/t/oauth2/v2.0/token", client_id="app")

    # The scope derives from the Dataverse URL; the secret or certificate cannot.
    with pytest.raises(
        ConfigError,
        match="TABLESYNC_DATAVERSE__CLIENT_SECRET or TABLESYNC_DATAVERSE__CLIENT_CERTIFICATE_FILE",
    ):
        ODataHttp("dataverse", settings)


def test_no_credentials_at_all_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"TABLESYNC_BC__TENANT_ID .* or TABLESYNC_BC__STATIC_TOKEN"
    ):
        ODataHttp("bc", api_settings(static_token=None))
