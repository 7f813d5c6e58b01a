"""Bad input is a 400 naming what was wrong, never a 500 — including random input."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emulators.conftest import CLIENT_TIMEOUT_S, TOKEN, BcEmulator, Emulator

pytestmark = pytest.mark.integration


async def _refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 400, response.text
    message: str = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    return message


async def test_unknown_fields(bc: BcEmulator, dv: Emulator) -> None:
    await _refused(await bc.client.post(bc.set_url("customers"), json={"colour": "red"}), "colour")
    await _refused(await dv.client.post(f"{dv.api}/accounts", json={"colour": "red"}), "colour")
    await _refused(await dv.client.get(f"{dv.api}/accounts?$select=name,colour"), "colour")
    await _refused(await bc.client.get(bc.set_url("customers") + "?$orderby=colour"), "colour")
    await _refused(
        await dv.client.post(f"{dv.api}/accounts", json={"colour@odata.bind": "/accounts(x)"}),
        "colour",
    )


async def test_bad_guids(bc: BcEmulator, dv: Emulator) -> None:
    await _refused(await bc.client.get(bc.set_url("customers", "not-a-guid")), "not-a-guid")
    await _refused(await dv.client.get(f"{dv.api}/accounts(12345)"), "12345")
    await _refused(
        await bc.client.post(bc.set_url("customers"), json={"taxAreaId": "xyz"}), "taxAreaId"
    )
    await _refused(
        await dv.client.post(
            f"{dv.api}/accounts", json={"ownerid@odata.bind": "/systemusers(nope)"}
        ),
        "nope",
    )
    await _refused(await dv.client.get(f"{dv.api}/WhoAmI", headers={"MSCRMCallerID": "bad"}), "bad")


async def test_malformed_filters(bc: BcEmulator, dv: Emulator) -> None:
    url = f"{dv.api}/accounts"
    await _refused(await dv.client.get(url, params={"$filter": "name eq"}), "position")
    await _refused(await dv.client.get(url, params={"$filter": "name == 'x'"}), "position")
    await _refused(await dv.client.get(url, params={"$filter": "name eq 'x"}), "unterminated")
    await _refused(await dv.client.get(url, params={"$filter": "nope eq 1"}), "nope")
    await _refused(
        await dv.client.get(url, params={"$filter": "creditlimit eq 'a'"}), "creditlimit"
    )
    await _refused(
        await dv.client.get(url, params={"$filter": "contains(creditlimit,'1')"}), "creditlimit"
    )
    await _refused(
        await bc.client.get(bc.set_url("customers"), params={"$filter": "taxLiable gt true"}),
        "taxLiable",
    )


async def test_wrong_types_in_bodies(bc: BcEmulator, dv: Emulator) -> None:
    await _refused(
        await bc.client.post(bc.set_url("customers"), json={"creditLimit": "lots"}), "creditLimit"
    )
    await _refused(
        await bc.client.post(bc.set_url("customers"), json={"taxLiable": "yes"}), "taxLiable"
    )
    await _refused(
        await bc.client.post(bc.set_url("customers"), json={"displayName": None}), "displayName"
    )
    await _refused(
        await dv.client.post(f"{dv.api}/accounts", json={"customertypecode": 1.5}),
        "customertypecode",
    )
    await _refused(
        await dv.client.post(f"{dv.api}/accounts", json={"customertypecode": 2**40}),
        "customertypecode",
    )
    await _refused(await dv.client.post(f"{dv.api}/accounts", json={"name": 5}), "name")
    await _refused(
        await dv.client.post(f"{dv.api}/accounts", json={"creditlimit": 1e40}), "creditlimit"
    )


async def test_malformed_bodies_and_options(bc: BcEmulator, dv: Emulator) -> None:
    url = f"{dv.api}/accounts"
    await _refused(
        await dv.client.post(
            url, content=b"{not json", headers={"Content-Type": "application/json"}
        )
    )
    await _refused(await dv.client.post(url, json=[1, 2]))
    await _refused(await dv.client.post(url, content=b""))
    await _refused(await dv.client.get(url, params={"$top": "-1"}), "$top")
    await _refused(await dv.client.get(url, params={"$orderby": "name sideways"}), "sideways")
    await _refused(await dv.client.get(url, params={"$bogus": "1"}), "$bogus")
    await _refused(await bc.client.get(bc.set_url("customers"), params={"$count": "maybe"}))
    too_long = await dv.client.post(url, json={"name": "x" * 161})
    await _refused(too_long, "160")
    assert too_long.json()["error"]["code"] == "0x80044331"


async def test_unsupported_and_unknown_routes(bc: BcEmulator, dv: Emulator) -> None:
    expand = await dv.client.get(f"{dv.api}/accounts", params={"$expand": "primarycontactid"})
    assert expand.status_code == 501
    assert (await dv.client.get(f"{dv.api}/leads")).status_code == 404
    assert (await dv.client.put(f"{dv.api}/accounts", json={})).status_code == 405
    assert (await bc.client.put(bc.set_url("customers"), json={})).status_code == 405


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELD_NAMES = st.sampled_from(
    [
        "name",
        "accountnumber",
        "creditlimit",
        "customertypecode",
        "statecode",
        "accountid",
        "ownerid@odata.bind",
        "primarycontactid",
        "_ownerid_value",
        "versionnumber",
        "x",
    ]
)
_BODIES = st.dictionaries(_FIELD_NAMES, _JSON, max_size=4) | _JSON
_FILTER_TEXT = st.lists(
    st.sampled_from(
        [
            *"nameqtlgcrdi '()012-.,:TZ_%",
            " eq ",
            " and ",
            " or ",
            "not ",
            "null",
            "name",
            "creditlimit",
            "displayName",
            "contains(",
            "2024-01-01T00:00:00Z",
            "00000000-0000-0000-0000-000000000000",
        ]
    ),
    max_size=12,
).map("".join)


async def test_random_input_never_gets_a_500(dv: Emulator, bc: BcEmulator) -> None:
    dv_url = f"{dv.api}/accounts"
    bc_url = bc.set_url("customers")

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body=_BODIES,
        expression=_FILTER_TEXT,
        key=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12),
    )
    def check(body: object, expression: str, key: str) -> None:
        with httpx.Client(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=CLIENT_TIMEOUT_S
        ) as client:
            responses = [
                client.post(dv_url, json=body),
                client.post(bc_url, json=body),
                client.get(dv_url, params={"$filter": expression}),
                client.get(bc_url, params={"$filter": expression}),
                client.get(f"{dv_url}({key})"),
                client.patch(f"{dv_url}(accountnumber='{key}')", json=body),
            ]
        for response in responses:
            assert response.status_code < 500, f"{response.request.url}: {response.text}"
            if response.status_code >= 400:
                assert response.json()["error"]["message"]

    await asyncio.to_thread(check)
