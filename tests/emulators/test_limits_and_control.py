"""Service protection (429 + Retry-After), bearer auth (401), and the control API."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.emulators.conftest import CLIENT_TIMEOUT_S, BcEmulator, Emulator

pytestmark = pytest.mark.integration

WAIT_S = 60.0
"""How long a test waits for something that a loaded machine may make late."""


async def _until_throttled(
    client: httpx.AsyncClient, url: str, budget: int, window_s: float
) -> httpx.Response:
    """Requests ``url`` from a fresh budget until one is throttled; returns that answer.

    The first ``budget`` requests must pass. The one after them is throttled if it
    lands within the window of the first, which a loaded machine may not manage; so
    each request admitted past the budget is checked instead: a whole window must
    separate it from the one ``budget`` admissions before it (from before that one
    was sent)."""
    sent: list[float] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        before = time.monotonic()
        response = await client.get(url)
        if response.status_code == 429 and len(sent) >= budget:
            return response
        assert response.status_code == 200, f"request {len(sent) + 1}: {response.text}"
        if len(sent) >= budget:
            since = time.monotonic() - sent[-budget]
            assert since >= window_s, f"{budget + 1} requests admitted within {since:.2f} s"
        sent.append(before)
    raise AssertionError(f"no request was throttled within {WAIT_S:.0f} s")


async def _until_admitted(client: httpx.AsyncClient, url: str) -> httpx.Response:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        response = await client.get(url)
        if response.status_code != 429:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"requests were still throttled after {WAIT_S:.0f} s")


async def test_dataverse_429_with_retry_after_after_the_budget(dv: Emulator) -> None:
    await dv.configure(requests_per_window=3, window_s=2)
    url = f"{dv.api}/accounts"
    throttled = await _until_throttled(dv.client, url, budget=3, window_s=2)
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
    async with httpx.AsyncClient(headers=headers, timeout=CLIENT_TIMEOUT_S) as anonymous:
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
    # Long enough for the next request to land inside it however loaded the machine.
    for_seconds = 5.0
    injected = time.monotonic()
    fault = {"status": 429, "for_seconds": for_seconds, "retry_after": 3}
    assert (await bc.control("POST", "faults", json=fault)).status_code == 201
    throttled = await bc.client.get(bc.set_url("customers"))
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "3"
    assert throttled.json()["error"]["code"] == "Application_TooManyRequests"
    # The fault ends by itself, and not before its time is up.
    assert (await _until_admitted(bc.client, bc.set_url("customers"))).status_code == 200
    assert time.monotonic() - injected >= for_seconds


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


@pytest.mark.parametrize("side", ["bc", "dataverse"])
async def test_a_short_listing_leaves_ids_out_of_id_listings_only(
    side: str, bc: BcEmulator, dv: Emulator
) -> None:
    emulator, entity_set, key = (
        (bc, "customers", "id") if side == "bc" else (dv, "accounts", "accountid")
    )
    url = bc.set_url(entity_set) if side == "bc" else f"{dv.api}/{entity_set}"
    for n in range(40):
        created = await emulator.client.post(
            url, json={"name" if side != "bc" else "displayName": f"r{n}"}
        )
        assert created.status_code in (201, 204), created.text
    listing = {"$select": key, "$orderby": f"{key} asc"}
    every = {r[key] for r in (await emulator.client.get(url, params=listing)).json()["value"]}
    assert len(every) == 40

    short = {"share": 0.5, "for_seconds": 30}
    assert (await emulator.control("POST", "short-listing", json=short)).status_code == 201
    first = {r[key] for r in (await emulator.client.get(url, params=listing)).json()["value"]}
    again = {r[key] for r in (await emulator.client.get(url, params=listing)).json()["value"]}
    assert first == again and 0 < len(first) < 40
    # A whole-row read, a filtered read and a read by id still find every row.
    assert len((await emulator.client.get(url)).json()["value"]) == 40
    hidden = sorted(every - first)
    by_id = await emulator.client.get(
        url, params={"$select": key, "$filter": f"{key} eq {hidden[0]}"}
    )
    assert [r[key] for r in by_id.json()["value"]] == [hidden[0]]
    state = (await emulator.control("GET", "short-listing")).json()
    assert state["hidden"] == 2 * len(hidden) and state["share"] == 0.5

    assert (await emulator.control("DELETE", "short-listing")).status_code == 204
    assert (await emulator.control("GET", "short-listing")).json() is None
    after = {r[key] for r in (await emulator.client.get(url, params=listing)).json()["value"]}
    assert after == every
    for bad in ({"share": 0, "for_seconds": 5}, {"share": 0.5}, {"share": 2, "for_seconds": 1}):
        assert (await emulator.control("POST", "short-listing", json=bad)).status_code == 400


async def test_a_short_listing_ends_by_itself(bc: BcEmulator) -> None:
    url = bc.set_url("customers")
    for n in range(20):
        assert (await bc.client.post(url, json={"displayName": f"r{n}"})).status_code == 201
    listing = {"$select": "id"}
    short = {"share": 1, "for_seconds": 0.5}
    assert (await bc.control("POST", "short-listing", json=short)).status_code == 201

    async def full() -> bool:
        rows = (await bc.client.get(url, params=listing)).json()["value"]
        return len(rows) == 20

    deadline = time.monotonic() + WAIT_S
    while not await full():
        assert time.monotonic() < deadline, "the short listing did not end"
        await asyncio.sleep(0.1)
    assert (await bc.control("GET", "short-listing")).json()["seconds_left"] == 0
