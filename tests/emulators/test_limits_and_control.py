"""Service protection (429 + Retry-After), bearer auth (401), and the control API."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration


async def test_dataverse_429_with_retry_after_after_the_budget(dv: Emulator) -> None:
    await dv.configure(requests_per_window=3, window_s=2)
    url = f"{dv.api}/accounts"
    for _ in range(3):
        assert (await dv.client.get(url)).status_code == 200
    throttled = await dv.client.get(url)
    assert throttled.status_code == 429
    retry_after = int(throttled.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert throttled.json()["error"] == {
        "code": "0x80072322",
        "message": "Number of requests exceeded the limit of 3 over time window of 2 seconds.",
    }
    await asyncio.sleep(retry_after)
    assert (await dv.client.get(url)).status_code == 200
    stats = (await dv.control("GET", "stats")).json()
    assert stats["throttled"] == 1
    assert stats["by_status"]["429"] == 1


async def test_bc_429_shape(bc: BcEmulator) -> None:
    await bc.configure(requests_per_window=1, window_s=30)
    assert (await bc.client.get(bc.set_url("customers"))).status_code == 200
    throttled = await bc.client.get(bc.set_url("customers"))
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "Application_TooManyRequests"
    assert int(throttled.headers["retry-after"]) >= 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
async def test_requests_without_the_token_are_401(
    bc: BcEmulator, dv: Emulator, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=headers) as anonymous:
        bc_response = await anonymous.get(bc.set_url("customers"))
        dv_response = await anonymous.get(f"{dv.api}/accounts")
        control = await anonymous.get(f"{dv.url}/_emulator/stats")
    assert bc_response.status_code == dv_response.status_code == control.status_code == 401
    assert bc_response.json()["error"]["code"] == "Authentication_InvalidCredentials"
    assert "error" in dv_response.json()
    assert dv_response.headers["www-authenticate"].startswith("Bearer")


async def test_injected_faults_by_count(dv: Emulator) -> None:
    response = await dv.control("POST", "faults", json={"status": 503, "count": 2})
    assert response.status_code == 201
    url = f"{dv.api}/accounts"
    statuses = [(await dv.client.get(url)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert (await dv.control("GET", "faults")).json() is None


async def test_injected_429_for_a_time_with_retry_after(bc: BcEmulator) -> None:
    await bc.control("POST", "faults", json={"status": 429, "for_seconds": 0.5, "retry_after": 3})
    throttled = await bc.client.get(bc.set_url("customers"))
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "3"
    assert throttled.json()["error"]["code"] == "Application_TooManyRequests"
    await asyncio.sleep(0.6)
    assert (await bc.client.get(bc.set_url("customers"))).status_code == 200


async def test_fault_can_be_cleared_and_bad_faults_refused(dv: Emulator) -> None:
    await dv.control("POST", "faults", json={"status": 500, "count": 100})
    assert (await dv.client.get(f"{dv.api}/accounts")).status_code == 500
    assert (await dv.control("DELETE", "faults")).status_code == 204
    assert (await dv.client.get(f"{dv.api}/accounts")).status_code == 200
    bad_faults: list[object] = [
        {"status": 404, "count": 1},
        {"status": 503},
        {"status": 503, "count": 0},
        [],
    ]
    for bad in bad_faults:
        assert (await dv.control("POST", "faults", json=bad)).status_code == 400


async def test_counters_by_method(dv: Emulator) -> None:
    await dv.client.get(f"{dv.api}/accounts")
    await dv.client.post(f"{dv.api}/accounts", json={"name": "x"})
    await dv.client.post(f"{dv.api}/accounts", json={"nope": 1})
    stats = (await dv.control("GET", "stats")).json()
    assert stats["total"] == 3
    assert stats["by_method"] == {"GET": 1, "POST": 2}
    assert stats["by_status"] == {"200": 1, "204": 1, "400": 1}


async def test_reset_empties_tables_but_keeps_the_baseline(bc: BcEmulator, dv: Emulator) -> None:
    await dv.client.post(f"{dv.api}/accounts", json={"name": "x"})
    await bc.client.post(bc.set_url("customers"), json={"displayName": "x"})
    await dv.reset()
    await bc.reset()
    assert (await dv.client.get(f"{dv.api}/accounts")).json()["value"] == []
    users = (await dv.client.get(f"{dv.api}/systemusers")).json()["value"]
    assert [u["fullname"] for u in users] == ["tablesync integration"]
    assert (await bc.client.get(bc.set_url("customers"))).json()["value"] == []
    again = await bc.client.post(bc.set_url("customers"), json={"displayName": "y"})
    assert again.json()["number"] == "C00001"
