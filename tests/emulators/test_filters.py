"""``$filter`` on both emulators, checked against ``tablesync.core.filters.evaluate`` as the
oracle: whatever rows the server returns must be exactly those the filter matches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync.core.filters import evaluate, parse
from tests.emulators.conftest import CLIENT_TIMEOUT_S, TOKEN, BcEmulator, Emulator

pytestmark = pytest.mark.integration

ACCOUNTS: list[dict[str, object]] = [
    {"name": "Alpha", "creditlimit": 100.5, "customertypecode": 1, "address1_city": "Seattle"},
    {"name": "alpha", "creditlimit": 100, "customertypecode": 3, "address1_city": "seattle"},
    {"name": "Beta 100%", "creditlimit": 0, "customertypecode": None, "address1_city": None},
    {"name": "a_b", "creditlimit": 250.25, "customertypecode": 1, "address1_city": "Boston"},
    {"name": "Bob's Bikes", "creditlimit": None, "customertypecode": 2, "address1_city": "Miami"},
    {"name": None, "creditlimit": -5, "customertypecode": 3, "address1_city": "Atlanta"},
    {"name": "Gamma Phi", "creditlimit": 99.99, "customertypecode": 12, "address1_city": "Atlanta"},
]


async def _accounts(dv: Emulator) -> list[dict[str, Any]]:
    owner = (await dv.client.get(f"{dv.api}/WhoAmI")).json()["UserId"]
    contact = await dv.client.post(
        f"{dv.api}/contacts",
        json={"lastname": "Primary"},
        headers={"Prefer": "return=representation"},
    )
    for i, body in enumerate(ACCOUNTS):
        payload = {k: v for k, v in body.items() if v is not None}
        if i == 0:
            payload["primarycontactid@odata.bind"] = f"/contacts({contact.json()['contactid']})"
        response = await dv.client.post(f"{dv.api}/accounts", json=payload)
        assert response.status_code == 204, response.text
    rows: list[dict[str, Any]] = (await dv.client.get(f"{dv.api}/accounts")).json()["value"]
    assert all(r["_ownerid_value"] == owner for r in rows)
    return rows


async def _matching(emulator: Emulator, url: str, expression: str, key: str) -> list[str]:
    response = await emulator.client.get(url, params={"$filter": expression})
    assert response.status_code == 200, f"{expression}: {response.text}"
    return sorted(r[key] for r in response.json()["value"])


def _oracle(rows: list[dict[str, Any]], expression: str, key: str, ignore_case: bool) -> list[str]:
    expr = parse(expression)
    return sorted(r[key] for r in rows if evaluate(expr, r, ignore_case=ignore_case))


async def test_dataverse_operators_precedence_functions(dv: Emulator) -> None:
    rows = await _accounts(dv)
    now = datetime.now(UTC)
    past = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = rows[0]
    expressions = [
        "name eq 'alpha'",
        "name ne 'alpha'",
        "name eq null",
        "name ne null",
        "creditlimit gt 100",
        "creditlimit ge 100.5",
        "creditlimit lt 100",
        "creditlimit le 0",
        "100 lt creditlimit",
        "customertypecode eq 3",
        "customertypecode ne 3",
        "contains(name,'%')",
        "startswith(name,'a_')",
        "endswith(name,'''s Bikes')",
        "contains(name,'ALP') eq true",
        "contains(name,'alp') eq false",
        "not contains(name,'ph')",
        "name eq 'Alpha' or creditlimit gt 100 and customertypecode eq 1",
        "(name eq 'Alpha' or creditlimit gt 100) and customertypecode eq 1",
        "not (creditlimit gt 100 or name eq null)",
        "not (customertypecode eq 3) and address1_city ne 'atlanta'",
        f"createdon lt {future}",
        f"createdon gt {future}",
        f"modifiedon ge {past} and modifiedon le {future}",
        f"accountid eq {first['accountid']}",
        f"accountid ne {first['accountid']}",
        f"_ownerid_value eq {first['_ownerid_value']}",
        "_primarycontactid_value eq null",
        "_primarycontactid_value ne null",
        "statecode eq 0 and not (name eq 'beta 100%')",
        "address1_city gt 'boston' and address1_city le 'seattle'",
    ]
    url = f"{dv.api}/accounts"
    for expression in expressions:
        got = await _matching(dv, url, expression, "accountid")
        assert got == _oracle(rows, expression, "accountid", True), expression


async def test_bc_strings_compare_with_case(bc: BcEmulator) -> None:
    for name in ("Alpha", "alpha", "ALPHA co", "Beta"):
        response = await bc.client.post(bc.set_url("vendors"), json={"displayName": name})
        assert response.status_code == 201
    rows = (await bc.client.get(bc.set_url("vendors"))).json()["value"]
    url = bc.set_url("vendors")
    for expression in (
        "displayName eq 'alpha'",
        "startswith(displayName,'A')",
        "contains(displayName,'lph')",
        "displayName gt 'B'",
        "number eq 'V00002' or number eq 'V00004'",
        f"lastModifiedDateTime gt {rows[0]['lastModifiedDateTime']}",
        f"id eq {rows[1]['id']}",
        "currencyId eq 00000000-0000-0000-0000-000000000000 and blocked eq ' '",
    ):
        got = await _matching(bc, url, expression, "id")
        assert got == _oracle(rows, expression, "id", False), expression


_FIELDS = {
    "name": st.sampled_from(["'alpha'", "'Beta 100%'", "'a_b'", "'zzz'", "null"]),
    "creditlimit": st.sampled_from(["100", "100.5", "0", "-5", "99.99", "1000000", "null"]),
    "customertypecode": st.sampled_from(["1", "2", "3", "12", "null"]),
    "address1_city": st.sampled_from(["'seattle'", "'Atlanta'", "'m'", "null"]),
    "statecode": st.sampled_from(["0", "1"]),
}


@st.composite
def _comparison(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(_FIELDS)))
    literal = draw(_FIELDS[name])
    if literal == "null":
        op = draw(st.sampled_from(["eq", "ne"]))
    else:
        op = draw(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]))
    return f"{name} {op} {literal}"


@st.composite
def _call(draw: st.DrawFn) -> str:
    func = draw(st.sampled_from(["contains", "startswith", "endswith"]))
    prop = draw(st.sampled_from(["name", "address1_city"]))
    text = draw(st.sampled_from(["a", "A", "%", "_", "ph", "''", "Bob''s", "e"]))
    return f"{func}({prop},'{text}')"


_EXPRESSIONS = st.recursive(
    st.one_of(_comparison(), _call()),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]}) {t[1]} ({t[2]})"
        ),
        inner.map(lambda e: f"not ({e})"),
    ),
    max_leaves=6,
)


async def test_random_filters_agree_with_the_oracle(dv: Emulator) -> None:
    rows = await _accounts(dv)
    url = f"{dv.api}/accounts"

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_EXPRESSIONS)
    def check(expression: str) -> None:
        with httpx.Client(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=CLIENT_TIMEOUT_S
        ) as client:
            response = client.get(url, params={"$filter": expression})
        assert response.status_code == 200, f"{expression}: {response.text}"
        got = sorted(r["accountid"] for r in response.json()["value"])
        assert got == _oracle(rows, expression, "accountid", True), expression

    # The server runs on this event loop: drive hypothesis from a thread.
    await asyncio.to_thread(check)
