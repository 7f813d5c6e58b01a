"""Test doubles for the connectors' transport edge cases: a clock that sleeping moves."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tablesync.adapters.odata.http import ODataHttp
from tablesync.settings import ApiSettings

DV_BASE = "http://dataverse.test/api/data/v9.2"


class FakeTime:
    """Sleeping records the wait and moves the clock by it; nothing really waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def api_settings(base_url: str = DV_BASE, **overrides: object) -> ApiSettings:
    values: dict[str, object] = {
        "base_url": base_url,
        "max_retries": 3,
        "backoff_base_s": 0.1,
        "backoff_max_s": 1.0,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return ApiSettings.model_validate(values)


def mock_http(
    handler: Callable[[httpx.Request], httpx.Response],
    time: FakeTime,
    *,
    side: str = "dataverse",
    settings: ApiSettings | None = None,
) -> ODataHttp:
    return ODataHttp(
        side,
        settings or api_settings(),
        transport=httpx.MockTransport(handler),
        sleep=time.sleep,
        clock=time.clock,
    )
