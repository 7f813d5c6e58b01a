"""The emulators' service protection: the request budget, and the real limits
(concurrency with BC's queue, Dataverse's execution time, latency, per-record cost),
each kept per user; and that none of the real limits is on unless asked for."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from tablesync.core.events import Side
from tablesync.emulators.common.guard import Guard
from tablesync.emulators.common.limiter import (
    ExecutionBudget,
    Gate,
    Protection,
    RealLimits,
    count_written,
    current_cost,
    metering,
)
from tablesync.emulators.common.runtime import EmulatorConfig, Runtime, Tuning
from tablesync.emulators.dataverse.style import DATAVERSE_STYLE
from tablesync.settings import EmulatorSettings, Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Execution-time budget


def test_execution_time_refuses_once_the_window_holds_the_budget() -> None:
    clock = Clock()
    budget = ExecutionBudget(10.0, 30.0, clock)
    budget.charge(4.0)
    clock.now += 5
    budget.charge(5.9)
    assert budget.admit() is None
    clock.now += 5
    budget.charge(0.2)
    # 10.1 s within the window: refused until the first 4 s leave it, 20 s from now.
    assert budget.admit() == 20
    clock.now += 19.5
    assert budget.admit() == 1
    clock.now += 0.5
    assert budget.admit() is None
    assert budget.used_s == pytest.approx(6.1)


@given(st.lists(st.tuples(st.floats(0, 20), st.floats(0, 5)), max_size=40))
# A charge made at a moment whose sum with the window rounds up: 31 s was answered.
@example([(1.2279057228446248, 3.0), (0.0, 5.0), (0.0, 0.0)])
def test_execution_time_admits_exactly_while_the_window_holds_less_than_the_budget(
    steps: list[tuple[float, float]],
) -> None:
    clock = Clock()
    budget = ExecutionBudget(8.0, 30.0, clock)
    charged: list[tuple[float, float]] = []
    for advance, seconds in steps:
        clock.now += advance
        in_window = sum(s for at, s in charged if at > clock.now - 30.0)
        wait = budget.admit()
        if abs(in_window - 8.0) > 1e-6:
            assert (wait is None) == (in_window < 8.0)
        if wait is not None:
            assert 1 <= wait <= 30
        budget.charge(seconds)
        charged.append((clock.now, seconds))


# Concurrency


async def test_dataverse_style_gate_refuses_past_the_limit_at_once() -> None:
    gate = Gate(2)
    assert await gate.enter()
    assert await gate.enter()
    assert not await gate.enter()
    gate.leave()
    assert await gate.enter()
    assert gate.active == 2


async def test_bc_style_gate_queues_then_refuses_past_the_queue() -> None:
    gate = Gate(1, queued=2)
    assert await gate.enter()
    second = asyncio.create_task(gate.enter())
    third = asyncio.create_task(gate.enter())
    await _queued()
    assert gate.waiting == 2
    assert not await gate.enter()
    assert not second.done()
    gate.leave()
    assert await asyncio.wait_for(second, 5)
    assert not third.done()
    assert gate.active == 1
    gate.leave()
    assert await asyncio.wait_for(third, 5)
    gate.leave()
    assert gate.active == 0
    assert gate.waiting == 0


async def test_a_waiter_cancelled_gives_up_its_place_or_its_slot() -> None:
    gate = Gate(1, queued=2)
    assert await gate.enter()
    cancelled = asyncio.create_task(gate.enter())
    after = asyncio.create_task(gate.enter())
    await _queued()
    assert gate.waiting == 2
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.waiting == 1
    gate.leave()
    assert await asyncio.wait_for(after, 5)
    gate.leave()
    assert gate.active == 0


async def _queued() -> None:
    # One turn of the loop runs every task just created up to its wait for a slot.
    await asyncio.sleep(0)


# Per user


def test_each_user_has_a_budget_of_its_own() -> None:
    clock = Clock()
    protection = Protection(2, 10.0, clock=clock)
    alice, bob = protection.user("Bearer alice"), protection.user("Bearer bob")
    assert alice.requests.admit() is None
    assert alice.requests.admit() is None
    assert alice.requests.admit() == 10
    assert bob.requests.admit() is None
    assert protection.user("Bearer alice") is alice


async def test_each_user_has_slots_and_execution_time_of_its_own() -> None:
    clock = Clock()
    real = RealLimits(concurrent=1, execution_s=1.0)
    protection = Protection(100, 30.0, real, clock=clock)
    alice, bob = protection.user("a"), protection.user("b")
    assert alice.gate is not None and bob.gate is not None
    assert alice.execution is not None and bob.execution is not None
    assert await alice.gate.enter()
    assert not await alice.gate.enter()
    assert await bob.gate.enter()
    alice.execution.charge(1.5)
    assert alice.execution.admit() == 30
    assert bob.execution.admit() is None
    assert protection.in_flight() == (2, 0)


def test_changing_the_limits_counts_every_user_afresh() -> None:
    protection = Protection(1, 10.0)
    assert protection.user("a").requests.admit() is None
    assert protection.user("a").requests.admit() is not None
    protection.configure(budget=2)
    assert protection.user("a").requests.admit() is None
    assert protection.user("a").gate is None
    protection.enforce(RealLimits(concurrent=3))
    gate = protection.user("a").gate
    assert gate is not None and gate.concurrent == 3
    protection.enforce(None)
    assert protection.user("a").gate is None


# Per-record cost


def test_records_are_counted_only_for_a_metered_request() -> None:
    count_written(5)
    assert current_cost() is None
    with metering() as cost:
        count_written(3)
        count_written(1)
    assert cost.records == 4
    assert current_cost() is None


async def test_tasks_a_request_starts_count_against_it() -> None:
    with metering() as cost:
        await asyncio.gather(*(asyncio.create_task(_write(2)) for _ in range(3)))
    assert cost.records == 6


async def _write(records: int) -> None:
    count_written(records)


# The documented limits, and off by default


def test_documented_limits_scaled_to_the_window_keep_the_rate_per_second() -> None:
    budget, dataverse = RealLimits.documented("dataverse", window_s=30.0)
    assert budget == 600
    assert dataverse.concurrent == 52
    assert dataverse.queued == 0
    assert dataverse.execution_s == pytest.approx(120.0)
    assert dataverse.latency_s == pytest.approx(0.05)
    budget, bc = RealLimits.documented("bc", window_s=300.0, record_cost_s=0.002)
    assert budget == 6000
    assert (bc.concurrent, bc.queued, bc.execution_s) == (5, 95, None)
    assert bc.record_cost_s == pytest.approx(0.002)


def test_the_real_limits_are_off_unless_the_settings_turn_them_on() -> None:
    for side in ("bc", "dataverse"):
        config = EmulatorConfig.from_settings(Settings(), side)
        assert config.real_limits is None
        assert config.requests_per_window == EmulatorSettings().requests_per_window == 6000
        assert config.window_s == 5.0
    assert EmulatorConfig(dsn="postgresql://x/y", token="t").real_limits is None


def test_the_settings_turn_on_the_documented_limits_of_each_side() -> None:
    emulator = EmulatorSettings(real_limits=True, window_s=30.0, latency_ms=20, record_cost_ms=1)
    settings = Settings(emulator=emulator)
    dataverse = EmulatorConfig.from_settings(settings, "dataverse")
    bc = EmulatorConfig.from_settings(settings, "bc")
    assert dataverse.requests_per_window == bc.requests_per_window == 600
    assert dataverse.real_limits is not None and bc.real_limits is not None
    assert dataverse.real_limits.execution_s == pytest.approx(120.0)
    assert dataverse.real_limits.latency_s == pytest.approx(0.02)
    assert bc.real_limits.record_cost_s == pytest.approx(0.001)
    assert (bc.real_limits.concurrent, bc.real_limits.queued) == (5, 95)


# Accepted tokens: each one a user of its own


def _guarded(extra_tokens: tuple[str, ...], budget: int) -> tuple[httpx.AsyncClient, Runtime]:
    """A client of an app behind the emulators' guard that accepts ``local-dev-token``
    and ``extra_tokens``, each with a request budget of ``budget`` per window."""

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    class Api:
        side: Side = "dataverse"
        style = DATAVERSE_STYLE
        roots = ("/api/data/v9.2",)
        specs = ()

    config = EmulatorConfig(
        dsn="postgresql://unused",
        token="local-dev-token",
        extra_tokens=extra_tokens,
        requests_per_window=budget,
        window_s=300.0,
    )
    runtime = Runtime.create(config, Api(), Tuning(max_page_size=10))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=Guard(ok, runtime))
    return httpx.AsyncClient(transport=transport, base_url="http://emulator"), runtime


async def _status(client: httpx.AsyncClient, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    reply = await client.get("/api/data/v9.2/accounts", headers=headers)
    return reply.status_code


async def test_each_accepted_token_is_a_user_with_a_budget_of_its_own() -> None:
    client, runtime = _guarded(("second-token", "third-token"), budget=2)
    async with client:
        assert [await _status(client, "local-dev-token") for _ in range(3)] == [200, 200, 429]
        # The first user's budget is spent; the others still have all of theirs.
        assert [await _status(client, "second-token") for _ in range(3)] == [200, 200, 429]
        assert await _status(client, "third-token") == 200
        assert await _status(client, "unknown-token") == 401
    # Counted by user, without naming the tokens.
    assert runtime.protection.admitted_by_user() == [2, 2, 1]


def test_the_settings_give_the_extra_tokens_to_the_emulators() -> None:
    tokens = ["second-token-s3cr3t", "third-token-s3cr3t"]
    settings = Settings(emulator=EmulatorSettings(extra_tokens=[SecretStr(t) for t in tokens]))
    config = EmulatorConfig.from_settings(settings, "bc")
    assert config.extra_tokens == tuple(tokens)
    assert "s3cr3t" not in repr(settings.emulator)
