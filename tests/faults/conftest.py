"""Fixtures of the fault suite: its own Kafka and PostgreSQL, the plan (short
by default, long with ``TABLESYNC_FAULTS=full``) and the seed (random unless
``TABLESYNC_FAULT_SEED`` gives one back)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.chaos import Figures, run_chaos
from tests.faults.infra import FaultInfra, start_infra
from tests.faults.pipeline import Pipeline, Tuning, open_pipeline
from tests.faults.schedule import Plan

pytestmark = pytest.mark.integration

FULL = os.environ.get("TABLESYNC_FAULTS", "short") == "full"

SHORT_PLAN = Plan(
    name="short",
    fault_phase_s=60.0,
    per_kind=1,
    min_per_kind=1,
    min_changes=200,
    apply_instances=2,
    capture_instances=2,
    workers=4,
    rate_per_s=5.0,
    emulator_down_s=8.0,
    storm_s=(8.0, 10.0),
    fault_point_timeout_s=20.0,
    sync_every_s=40.0,
    settle_timeout_s=150.0,
    stable_window_s=8.0,
)

FULL_PLAN = Plan(
    name="full",
    fault_phase_s=1800.0,
    per_kind=22,
    min_per_kind=20,
    min_changes=5000,
    apply_instances=3,
    capture_instances=2,
    workers=8,
    rate_per_s=4.0,
    emulator_down_s=30.0,
    storm_s=(3.0, 15.0),
    fault_point_timeout_s=60.0,
    sync_every_s=60.0,
    settle_timeout_s=900.0,
    stable_window_s=10.0,
)


@pytest.fixture(scope="session")
def plan() -> Plan:
    return FULL_PLAN if FULL else SHORT_PLAN


@pytest.fixture(scope="session")
def seed() -> int:
    given = os.environ.get("TABLESYNC_FAULT_SEED")
    return int(given) if given else random.SystemRandom().randrange(1, 2**31)


@pytest.fixture(scope="session")
async def fault_infra(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultInfra]:
    infra = await start_infra(tmp_path_factory.mktemp("fault-infra") / "state")
    try:
        yield infra
    finally:
        await infra.purge()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-run")


@pytest.fixture(scope="session")
async def pipeline(
    fault_infra: FaultInfra, run_dir: Path, plan: Plan, seed: int
) -> AsyncIterator[Pipeline]:
    """The whole tablesync, one process per service (and per apply instance and
    capture instance), shared by the suite's tests."""
    tuning = Tuning(apply_instances=plan.apply_instances, capture_instances=plan.capture_instances)
    async with open_pipeline(fault_infra, run_dir, tuning, random.Random(seed)) as p:
        yield p


@pytest.fixture(scope="session")
async def outcome(pipeline: Pipeline, plan: Plan, seed: int) -> Figures:
    """The fault run; the tests after it look at its figures, logs and pipeline."""
    return await run_chaos(pipeline, plan, seed)
