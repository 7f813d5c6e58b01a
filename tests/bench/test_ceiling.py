"""The ceiling the real limits allow a run: the shortest time its requests and
execution time can take under each side's budgets and concurrency."""

from __future__ import annotations

import pytest
from bench.apilimits import SideLimits, SideWork, ceiling
from hypothesis import given
from hypothesis import strategies as st

DATAVERSE = SideLimits(
    requests_per_window=600, window_s=30.0, concurrent=52, execution_s_per_window=120.0
)
BC = SideLimits(requests_per_window=600, window_s=30.0, concurrent=5, execution_s_per_window=None)


def test_the_request_budget_binds_past_the_window_burst() -> None:
    # 2,600 requests: 600 at once, then 20 a second for the other 2,000.
    limit = ceiling(100_000, {"dataverse": (SideWork(2600, 50.0), DATAVERSE)})
    assert limit.binding == "dataverse requests"
    assert limit.seconds == pytest.approx(100.0)
    assert limit.records_per_s == pytest.approx(1000.0)
    assert limit.needed["dataverse"]["requests_steady"] == pytest.approx(130.0)


def test_the_execution_budget_binds_dataverse() -> None:
    # 520 s of execution: 120 s at once, then 4 s a second for the other 400 s.
    limit = ceiling(50_000, {"dataverse": (SideWork(100, 520.0), DATAVERSE)})
    assert limit.binding == "dataverse execution"
    assert limit.seconds == pytest.approx(100.0)
    assert limit.records_per_s == pytest.approx(500.0)


def test_bc_has_no_execution_budget_but_five_slots() -> None:
    limit = ceiling(
        10_000,
        {"bc": (SideWork(50, 40.0), BC), "dataverse": (SideWork(50, 40.0), DATAVERSE)},
    )
    assert "execution" not in limit.needed["bc"]
    assert limit.binding == "bc concurrency"
    assert limit.seconds == pytest.approx(8.0)


def test_limits_from_the_emulator_config() -> None:
    config = {
        "requests_per_window": 600,
        "window_s": 30.0,
        "real_limits": {"concurrent_requests": 5, "execution_s_per_window": None},
    }
    assert SideLimits.from_config(config) == BC
    with pytest.raises(ValueError, match="real limits"):
        SideLimits.from_config({**config, "real_limits": None})


@given(
    st.integers(0, 100_000),
    st.floats(0, 10_000),
    st.integers(0, 100_000),
    st.floats(0, 10_000),
)
def test_the_ceiling_needs_no_more_time_than_the_steady_rates(
    bc_requests: int, bc_execution: float, dv_requests: int, dv_execution: float
) -> None:
    limit = ceiling(
        1000,
        {
            "bc": (SideWork(bc_requests, bc_execution), BC),
            "dataverse": (SideWork(dv_requests, dv_execution), DATAVERSE),
        },
    )
    for needed in limit.needed.values():
        assert needed["requests"] <= needed["requests_steady"]
        assert needed.get("execution", 0) <= needed.get("execution_steady", 0)
        assert limit.seconds >= max(v for k, v in needed.items() if not k.endswith("_steady"))


def test_three_users_triple_every_budget_and_the_concurrency() -> None:
    one = ceiling(100_000, {"dataverse": (SideWork(2600, 520.0), DATAVERSE)})
    three_users = SideLimits(
        requests_per_window=600,
        window_s=30.0,
        concurrent=52,
        execution_s_per_window=120.0,
        users=3,
    )
    three = ceiling(100_000, {"dataverse": (SideWork(2600, 520.0), three_users)})
    # 2,600 requests: 1,800 at once, then 60 a second for the other 800.
    assert three.needed["dataverse"]["requests"] == pytest.approx(800 / 60, abs=1e-3)
    # 520 s of execution: 360 s at once, then 12 s a second for the other 160 s.
    assert three.needed["dataverse"]["execution"] == pytest.approx(160 / 12, abs=1e-3)
    assert three.needed["dataverse"]["concurrency"] == pytest.approx(520 / 156, abs=1e-3)
    assert three.seconds < one.seconds
