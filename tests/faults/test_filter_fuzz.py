"""Filters fuzzed with hypothesis: the parser never crashes, ``to_odata`` gives
text that parses back to the same filter, and over HTTP both emulators
answer any ``$filter`` with 200 or 400, never 500, while a value full of
quotes, wildcards and SQL is matched as the value it is."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync.core import filters
from tablesync.core.events import Side
from tablesync.emulators.bc.app import create_app as bc_app
from tablesync.emulators.common.runtime import EmulatorConfig
from tablesync.emulators.common.server import BackgroundServer
from tablesync.emulators.dataverse.app import create_app as dv_app
from tablesync.errors import FilterSyntaxError
from tablesync.localinfra.postgres import ensure_databases
from tablesync.settings import with_database
from tests.conftest import worker_database
from tests.faults.conftest import FULL
from tests.faults.infra import FaultInfra

pytestmark = pytest.mark.integration

EXAMPLES = 400 if FULL else 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TOKEN = "fuzz-token"

_KEYWORDS = ["eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "null", "true", "false"]
_TOKENS = st.sampled_from(
    [
        *_KEYWORDS,
        "(",
        ")",
        ",",
        "'",
        "''",
        "displayName",
        "name",
        "number",
        "contains",
        "startswith",
        "endswith",
        "1",
        "-1.5",
        "2026-01-01",
        "2026-01-01T00:00:00Z",
        "00000000-0000-0000-0000-000000000000",
        "';--",
        "%",
        "_",
        "\\",
        " ",
    ]
)
# Text shaped like a filter (so the parser goes deep), and text of any shape.
FILTER_TEXT = st.one_of(
    st.lists(_TOKENS, max_size=12).map(" ".join),
    st.text(max_size=60),
)
_SQLISH = st.sampled_from(
    [
        "O'Brien",
        "''",
        "'; DROP TABLE customers; --",
        "a' or '1' eq '1",
        "100%",
        "under_score",
        "back\\slash",
        '"double"',
        "$1",
        "x' and displayName ne 'y",
    ]
)
VALUE = (
    st.one_of(
        _SQLISH,
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
            min_size=1,
            max_size=40,
        ),
        st.text(alphabet=string.printable.strip() + "'%_", min_size=1, max_size=40),
    )
    .map(str.strip)
    .filter(bool)
)


@dataclass
class Side_:
    side: Side
    client: httpx.AsyncClient
    path: str
    name_field: str
    id_field: str
    extra: dict[str, Any]


@pytest.fixture(scope="module")
async def sides(fault_infra: FaultInfra) -> AsyncIterator[dict[Side, Side_]]:
    """Both emulators in this process, on databases of their own."""
    dsn = fault_infra.state_dsn
    dsns = {
        side: with_database(dsn, worker_database(f"fuzz_{side}")) for side in ("bc", "dataverse")
    }
    await ensure_databases(fault_infra.superuser_dsn, list(dsns.values()))
    servers = {
        "bc": BackgroundServer(bc_app(EmulatorConfig(dsn=dsns["bc"], token=TOKEN))),
        "dataverse": BackgroundServer(dv_app(EmulatorConfig(dsn=dsns["dataverse"], token=TOKEN))),
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    clients: list[httpx.AsyncClient] = []
    try:
        found: dict[Side, Side_] = {}
        for side, server in servers.items():
            client = httpx.AsyncClient(base_url=await server.start(), headers=headers, timeout=30)
            clients.append(client)
            if side == "bc":
                company = (await client.get("/BC/api/v2.0/companies")).json()["value"][0]["id"]
                path = f"/BC/api/v2.0/companies({company})/customers"
                found["bc"] = Side_("bc", client, path, "displayName", "id", {})
            else:
                found["dataverse"] = Side_(
                    "dataverse",
                    client,
                    "/api/data/v9.2/accounts",
                    "name",
                    "accountid",
                    {"customertypecode": 3},
                )
        yield found
        for s in found.values():
            stats = (await s.client.get("/_emulator/stats")).json()
            assert "500" not in stats["by_status"], stats
    finally:
        for client in clients:
            await client.aclose()
        for server in servers.values():
            await server.stop()


@FUZZ
@given(text=FILTER_TEXT)
def test_the_parser_never_crashes_and_to_odata_round_trips(text: str) -> None:
    try:
        expr = filters.parse(text)
    except FilterSyntaxError:
        return
    again = filters.parse(filters.to_odata(expr))
    assert again == expr, (text, filters.to_odata(expr))


@FUZZ
@given(value=VALUE)
def test_a_value_survives_to_odata_and_back(value: str) -> None:
    expr = filters.Compare("displayName", filters.Op.EQ, value)
    assert filters.parse(filters.to_odata(expr)) == expr


@FUZZ
@given(text=FILTER_TEXT, side=st.sampled_from(("bc", "dataverse")))
async def test_any_filter_over_http_is_answered_200_or_400(
    sides: dict[Side, Side_], text: str, side: Side
) -> None:
    s = sides[side]
    response = await s.client.get(s.path, params={"$filter": text})
    assert response.status_code in (200, 400), (text, response.status_code, response.text[:300])


@FUZZ
@given(value=VALUE, side=st.sampled_from(("bc", "dataverse")))
async def test_a_quoted_value_is_matched_as_a_value(
    sides: dict[Side, Side_], value: str, side: Side
) -> None:
    s = sides[side]
    created = await s.client.post(
        s.path, json={s.name_field: value, **s.extra}, headers={"Prefer": "return=representation"}
    )
    assert created.status_code == 201, created.text
    record_id = created.json()[s.id_field]
    try:
        for expr in (
            filters.Compare(s.name_field, filters.Op.EQ, value),
            filters.Call(filters.Func.CONTAINS, s.name_field, value),
        ):
            response = await s.client.get(s.path, params={"$filter": filters.to_odata(expr)})
            assert response.status_code == 200, (value, response.text[:300])
            rows = response.json()["value"]
            assert record_id in {r[s.id_field] for r in rows}, (value, filters.to_odata(expr))
            if isinstance(expr, filters.Compare):
                names = {r[s.name_field] for r in rows}
                # Dataverse compares text without regard to case, BC exactly.
                same = {n.lower() for n in names} if side == "dataverse" else names
                assert same == {value.lower() if side == "dataverse" else value}, (value, names)
    finally:
        headers = {"If-Match": "*"} if side == "bc" else {}
        deleted = await s.client.delete(f"{s.path}({record_id})", headers=headers)
        assert deleted.status_code == 204, deleted.text
    # The table is still there, and still answers.
    assert (await s.client.get(s.path, params={"$top": "1"})).status_code == 200
