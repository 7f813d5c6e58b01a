"""The real limits on both emulators over HTTP: Dataverse's concurrency and
execution-time 429s, BC's queue, the latency and the per-record cost; and that an
emulator without them answers as it always did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration

WAIT_S = 30.0
"""How long a test waits for a condition that a loaded machine may make late."""
HELD_MS = 3000
"""The latency that holds a request's slot while a test fills the others."""
ACCOUNT = "Microsoft.Dynamics.CRM.account"


async def _stats(emulator: Emulator) -> dict[str, Any]:
    stats: dict[str, Any] = (await emulator.control("GET", "stats")).json()
    return stats


async def _until(emulator: Emulator, test: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if test((await _stats(emulator))["real_limits"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the emulator did not get there in {WAIT_S:.0f} s")


def _started(call: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
    async def run() -> httpx.Response:
        return await call

    return asyncio.create_task(run())


async def test_dataverse_refuses_past_its_concurrency_at_once(dv: Emulator) -> None:
    await dv.configure(real_limits={"concurrent_requests": 2, "latency_ms": HELD_MS})
    url = f"{dv.api}/accounts"
    held = [_started(dv.client.get(url)) for _ in range(2)]
    await _until(dv, lambda real: real["in_flight"] == 2)
    refused = await dv.client.get(url)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == {
        "code": "0x80072326",
        "message": "Number of concurrent requests exceeded the limit of 2.",
    }
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    assert (await dv.client.get(url)).status_code == 200
    stats = await _stats(dv)
    assert stats["throttled"] == 1
    assert stats["real_limits"]["in_flight"] == 0


async def test_bc_queues_past_its_concurrency_and_refuses_past_the_queue(bc: BcEmulator) -> None:
    await bc.configure(
        real_limits={"concurrent_requests": 1, "queued_requests": 1, "latency_ms": HELD_MS}
    )
    url = bc.set_url("customers")
    first = _started(bc.client.get(url))
    await _until(bc, lambda real: real["in_flight"] == 1)
    queued_at = time.monotonic()
    second = _started(bc.client.get(url))
    await _until(bc, lambda real: real["waiting"] == 1)
    refused = await bc.client.get(url)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "Application_TooManyRequests"
    assert "limit of 1 with 1 more queued" in refused.json()["error"]["message"]
    assert (await first).status_code == 200
    assert (await second).status_code == 200
    # The queued request waited for the first one's slot, then took its own latency.
    assert time.monotonic() - queued_at >= HELD_MS / 1000
    real = (await _stats(bc))["real_limits"]
    assert real["queued"] == 1
    assert (real["in_flight"], real["waiting"]) == (0, 0)


async def test_dataverse_refuses_once_the_execution_time_is_spent(dv: Emulator) -> None:
    await dv.configure(
        window_s=60,
        real_limits={"execution_s_per_window": 0.5, "latency_ms": 600},
    )
    url = f"{dv.api}/accounts"
    assert (await dv.client.get(url)).status_code == 200
    refused = await dv.client.get(url)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "0x80072321"
    assert error["message"].startswith(
        "Combined execution time of incoming requests exceeded limit of 500 milliseconds "
        "over time window of 60 seconds."
    )
    assert (await _stats(dv))["real_limits"]["execution_s"] >= 0.6


async def test_a_request_takes_the_latency_plus_the_cost_of_the_records_it_writes(
    dv: Emulator,
) -> None:
    await dv.configure(real_limits={"latency_ms": 100, "record_cost_ms": 10})
    targets = [{"name": f"cost {i}", "@odata.type": ACCOUNT} for i in range(30)]
    started = time.monotonic()
    response = await dv.client.post(
        f"{dv.api}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}
    )
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took >= 0.1 + 30 * 0.01
    started = time.monotonic()
    assert (await dv.client.get(f"{dv.api}/accounts")).status_code == 200
    assert time.monotonic() - started >= 0.1
    real = (await _stats(dv))["real_limits"]
    assert real["records_written"] == 30
    assert real["execution_s"] >= took - 0.05


async def test_a_batch_costs_the_records_its_parts_wrote(bc: BcEmulator) -> None:
    await bc.configure(real_limits={"latency_ms": 0, "record_cost_ms": 1})
    requests = [
        {
            "id": str(i),
            "method": "POST",
            "url": f"companies({bc.company})/customers",
            "headers": {"Content-Type": "application/json"},
            "body": {"displayName": f"batch {i}"},
        }
        for i in range(3)
    ]
    failing = {**requests[0], "id": "bad", "body": {"type": "Invalid Type"}}
    read = {"id": "read", "method": "GET", "url": f"companies({bc.company})/customers"}
    response = await bc.client.post(
        f"{bc.api}/$batch", json={"requests": [*requests, failing, read]}
    )
    assert response.status_code == 200, response.text
    assert (await _stats(bc))["real_limits"]["records_written"] == 3


async def test_the_dop_hint_is_sent_only_when_configured(dv: Emulator) -> None:
    await dv.configure(real_limits={"latency_ms": 0})
    assert "x-ms-dop-hint" not in (await dv.client.get(f"{dv.api}/accounts")).headers
    await dv.configure(real_limits={"dop_hint": 8})
    assert (await dv.client.get(f"{dv.api}/accounts")).headers["x-ms-dop-hint"] == "8"
    config = (await dv.control("GET", "config")).json()["real_limits"]
    assert config == {
        "concurrent_requests": 52,
        "queued_requests": 0,
        "latency_ms": 0.0,
        "record_cost_ms": 0.0,
        "execution_s_per_window": pytest.approx(20.0),
        "dop_hint": 8,
    }


async def test_bad_real_limits_are_refused(dv: Emulator) -> None:
    for bad in (
        {"real_limits": {"concurrent_requests": 0}},
        {"real_limits": {"latency_ms": -1}},
        {"real_limits": {"burst": 3}},
        {"real_limits": 5},
    ):
        assert (await dv.control("PATCH", "config", json=bad)).status_code == 400
    assert (await dv.control("GET", "config")).json()["real_limits"] is None


async def test_without_the_real_limits_nothing_waits_queues_or_costs(
    bc: BcEmulator, dv: Emulator
) -> None:
    for emulator in (bc, dv):
        config = (await emulator.control("GET", "config")).json()
        assert config["real_limits"] is None
    # Past both documented concurrency limits at once, every request is answered.
    url = bc.set_url("customers")
    answers = await asyncio.gather(*(bc.client.get(url) for _ in range(60)))
    assert {r.status_code for r in answers} == {200}
    answers = await asyncio.gather(*(dv.client.get(f"{dv.api}/accounts") for _ in range(60)))
    assert {r.status_code for r in answers} == {200}
    assert all("x-ms-dop-hint" not in r.headers for r in answers)
    targets = [{"name": f"free {i}", "@odata.type": ACCOUNT} for i in range(5)]
    created = await dv.client.post(
        f"{dv.api}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}
    )
    assert created.status_code == 200
    for emulator in (bc, dv):
        stats = await _stats(emulator)
        assert "real_limits" not in stats
        assert stats["throttled"] == 0


async def test_turning_the_real_limits_off_restores_the_request_budget_alone(
    dv: Emulator,
) -> None:
    await dv.configure(real_limits={"concurrent_requests": 1, "latency_ms": HELD_MS})
    held = _started(dv.client.get(f"{dv.api}/accounts"))
    await _until(dv, lambda real: real["in_flight"] == 1)
    await dv.configure(real_limits=None)
    # The request in flight keeps its slot; new ones take none and wait for nothing.
    answers = await asyncio.gather(*(dv.client.get(f"{dv.api}/accounts") for _ in range(3)))
    assert {r.status_code for r in answers} == {200}
    assert not held.done()
    assert (await held).status_code == 200
    assert "real_limits" not in await _stats(dv)
