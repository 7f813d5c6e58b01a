"""The ``Checkpoints`` port: what every implementation must do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.contract.state_fixtures import (
    StateHarness,
    memory_state_fixture,  # noqa: F401
    new_id,
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)

T0 = datetime(2026, 2, 1, 12, 0, 0, 123456, tzinfo=UTC)


class CheckpointsContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_a_watermark_moves_forward_only(self, state: StateHarness) -> None:
        checkpoints = state.stores.checkpoints
        assert await checkpoints.watermark("bc", "customers") is None
        await checkpoints.store_watermark("bc", "customers", T0)
        await checkpoints.store_watermark("bc", "customers", T0 - timedelta(microseconds=1))
        assert await checkpoints.watermark("bc", "customers") == T0
        await checkpoints.store_watermark("bc", "customers", T0 + timedelta(seconds=1))
        assert await checkpoints.watermark("bc", "customers") == T0 + timedelta(seconds=1)

    async def test_a_watermark_is_kept_per_side_and_table(self, state: StateHarness) -> None:
        checkpoints = state.stores.checkpoints
        await checkpoints.store_watermark("bc", "customers", T0)
        await checkpoints.store_watermark("dataverse", "customers", T0 - timedelta(days=1))
        assert await checkpoints.watermark("dataverse", "customers") == T0 - timedelta(days=1)
        assert await checkpoints.watermark("bc", "vendors") is None

    async def test_a_watermark_reads_back_as_the_same_instant_in_utc(
        self, state: StateHarness
    ) -> None:
        checkpoints = state.stores.checkpoints
        local = T0.astimezone(timezone(timedelta(hours=2)))
        await checkpoints.store_watermark("bc", "customers", local)
        stored = await checkpoints.watermark("bc", "customers")
        assert stored == T0
        assert stored is not None and stored.utcoffset() == timedelta(0)

    async def test_a_delta_link_is_replaced_and_forgotten_beside_the_watermark(
        self, state: StateHarness
    ) -> None:
        checkpoints = state.stores.checkpoints
        assert await checkpoints.delta_link("dataverse", "accounts") is None
        await checkpoints.store_delta_link("dataverse", "accounts", "accounts?$deltatoken=1")
        assert await checkpoints.watermark("dataverse", "accounts") is None
        await checkpoints.store_watermark("dataverse", "accounts", T0)
        await checkpoints.store_delta_link("dataverse", "accounts", "accounts?$deltatoken=7")

        assert await checkpoints.delta_link("dataverse", "accounts") == "accounts?$deltatoken=7"
        assert await checkpoints.watermark("dataverse", "accounts") == T0
        await checkpoints.store_watermark("dataverse", "accounts", T0 + timedelta(seconds=1))
        assert await checkpoints.delta_link("dataverse", "accounts") == "accounts?$deltatoken=7"
        await checkpoints.store_delta_link("dataverse", "accounts", None)
        assert await checkpoints.delta_link("dataverse", "accounts") is None
        assert await checkpoints.watermark("dataverse", "accounts") == T0 + timedelta(seconds=1)
        assert await checkpoints.delta_link("dataverse", "contacts") is None

    async def test_a_snapshot_served_to_the_end_is_not_served_again(
        self, state: StateHarness
    ) -> None:
        checkpoints = state.stores.checkpoints
        job_id = new_id()
        assert not await checkpoints.begin_snapshot(job_id, "bc", "customers")
        # Begun but not finished (the server died half-way): served again.
        assert not await checkpoints.begin_snapshot(job_id, "bc", "customers")
        await checkpoints.finish_snapshot(job_id, 120)
        assert await checkpoints.begin_snapshot(job_id, "bc", "customers")
        assert not await checkpoints.begin_snapshot(new_id(), "bc", "customers")
        await checkpoints.finish_snapshot(new_id(), 3)  # one never begun: nothing to note


class TestMemoryCheckpoints(CheckpointsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresCheckpoints(CheckpointsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
