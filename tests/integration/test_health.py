"""Readiness follows the broker: every service of ``run all`` on a Kafka
broker of the test's own (on free ports, so stopping it disturbs no other
test), its health server probed as a supervisor would. Ready once the
services run; not ready within 10 s of the broker stopping, while still
live; ready again once the broker is back."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tablesync.localinfra import kafka
from tablesync.localinfra.network import free_ports
from tablesync.settings import HealthSettings, LocalInfraSettings, Settings
from tests.integration.stack import TOKEN, open_stack, wait_for

pytestmark = pytest.mark.integration


async def _health_command(*args: str, **env: str) -> int:
    """``tablesync health ...`` in its own process, as a container healthcheck runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "health",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=60)


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[tuple[Settings, int]]:
    kafka_port, controller_port = free_ports(2)
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        local=LocalInfraSettings(state_dir=tmp_path, ready_timeout_s=120.0),
    )
    try:
        await kafka.up(settings, controller_port=controller_port)
        yield settings, controller_port
    finally:
        await kafka.purge(settings)


async def test_readiness_goes_with_the_broker_and_liveness_stays(
    own_broker: tuple[Settings, int], state_dsn: str
) -> None:
    broker, controller_port = own_broker
    (port,) = free_ports(1)
    async with (
        open_stack(
            kafka=broker.kafka_bootstrap_servers,
            state_dsn=state_dsn,
            topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        ) as stack,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        # The defaults a deployment gets, but for the port.
        await stack.start(health=HealthSettings(port=port))

        async def readiness() -> dict[str, object]:
            answer = await client.get("/readyz")
            assert answer.status_code in (200, 503), answer.text
            body: dict[str, object] = answer.json()
            return body

        async def ready() -> dict[str, object] | None:
            body = await readiness()
            return body if body["status"] == "ok" else None

        async def not_ready() -> dict[str, object] | None:
            body = await readiness()
            return body if body["status"] != "ok" else None

        body = await wait_for(ready, timeout_s=60, what="the services to be ready")
        assert set(body["checks"]) == {"postgres", "kafka", "bc", "dataverse"}  # type: ignore[arg-type]
        loops = body["loops"]
        assert "apply CUSTOMER" in loops and "capture bc customers" in loops  # type: ignore[operator]
        assert "coordinator commands" in loops  # type: ignore[operator]
        assert await _health_command(TABLESYNC_HEALTH__PORT=str(port)) == 0
        emulators = {
            "TABLESYNC_EMULATOR__TOKEN": TOKEN,
            "TABLESYNC_EMULATOR__BC_PORT": str(urlsplit(stack.settings.bc.base_url).port),
            "TABLESYNC_EMULATOR__DATAVERSE_PORT": str(
                urlsplit(stack.settings.dataverse.base_url).port
            ),
        }
        assert await _health_command("--emulator", "bc", **emulators) == 0
        assert await _health_command("--emulator", "dataverse", **emulators) == 0
        assert (
            await _health_command(
                "--emulator", "bc", **{**emulators, "TABLESYNC_EMULATOR__TOKEN": "x"}
            )
            == 1
        )

        await kafka.down(broker)
        stopped = time.monotonic()
        body = await wait_for(not_ready, timeout_s=10, what="readiness to go false")
        print(f"not ready {time.monotonic() - stopped:.1f} s after the broker stopped")
        kafka_check = body["checks"]["kafka"]  # type: ignore[index]
        assert kafka_check["ok"] is False, body
        assert all(c["ok"] for n, c in body["checks"].items() if n != "kafka"), body  # type: ignore[attr-defined]
        live = await client.get("/livez")
        assert live.status_code == 200, live.text
        assert await _health_command("--url", f"http://127.0.0.1:{port}") == 1
        assert await _health_command("--url", f"http://127.0.0.1:{port}", "--live") == 0

        await kafka.up(broker, controller_port=controller_port)
        restarted = time.monotonic()
        await wait_for(ready, timeout_s=60, what="readiness to come back")
        print(f"ready again {time.monotonic() - restarted:.1f} s after the broker answered")
