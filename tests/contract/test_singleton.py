"""The ``Singleton`` port: what every implementation must do."""

from __future__ import annotations

import pytest

from tablesync.adapters.transient import TRANSIENT
from tests.contract.state_fixtures import (
    StateHarness,
    memory_state_fixture,  # noqa: F401
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)

NAME = "coordinator"
# Short enough for the database's clock to pass it in a test, long enough
# that a few statements never outlast it.
TTL_S = 1.5


class SingletonContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_one_holder_at_a_time(self, state: StateHarness) -> None:
        first, second = state.holder(NAME), state.holder(NAME)
        epoch = await first.try_hold()
        assert epoch is not None
        assert await second.try_hold() is None
        assert await first.try_hold() == epoch  # renewed: still the same hold
        assert await second.try_hold() is None

    async def test_a_released_hold_is_free_for_another_holder(self, state: StateHarness) -> None:
        first, second = state.holder(NAME), state.holder(NAME)
        epoch = await first.try_hold()
        assert epoch is not None
        await second.release()  # not its hold: nothing changes
        assert await second.try_hold() is None
        await first.release()
        taken = await second.try_hold()
        assert taken is not None and taken > epoch
        assert await first.try_hold() is None
        await first.release()  # releasing what one does not hold is harmless
        await second.release()
        await second.release()
        again = await first.try_hold()
        assert again is not None and again > taken

    async def test_holds_of_different_names_do_not_exclude_each_other(
        self, state: StateHarness
    ) -> None:
        assert await state.holder(NAME).try_hold() is not None
        assert await state.holder("capture.bc").try_hold() is not None
        assert await state.holder("capture.dataverse").try_hold() is not None

    async def test_a_hold_not_renewed_expires_and_another_holder_takes_it(
        self, state: StateHarness
    ) -> None:
        """A holder that died (or is cut off) frees the lease within its time
        to live, by the database's clock, with no one's help."""
        first, second = state.holder(NAME, ttl_s=TTL_S), state.holder(NAME, ttl_s=TTL_S)
        epoch = await first.try_hold()
        assert epoch is not None
        await state.elapse(TTL_S * 0.5)
        assert await second.try_hold() is None
        await state.elapse(TTL_S * 0.5 + 0.05)
        taken = await second.try_hold()
        assert taken is not None and taken > epoch
        # The first one's hold is over: it cannot renew what another holds.
        assert await first.try_hold() is None

    async def test_renewing_keeps_the_hold_past_its_first_expiry(self, state: StateHarness) -> None:
        first, second = state.holder(NAME, ttl_s=TTL_S), state.holder(NAME, ttl_s=TTL_S)
        epoch = await first.try_hold()
        for _ in range(3):
            await state.elapse(TTL_S * 0.6)
            assert await first.try_hold() == epoch
            assert await second.try_hold() is None

    async def test_a_holder_whose_hold_expired_takes_it_anew_with_a_greater_epoch(
        self, state: StateHarness
    ) -> None:
        """Nobody took it meanwhile, but the holder learns there was a gap in
        which someone could have: its work stopped, a new hold begins."""
        holder = state.holder(NAME, ttl_s=TTL_S)
        epoch = await holder.try_hold()
        assert epoch is not None
        await state.elapse(TTL_S + 0.05)
        again = await holder.try_hold()
        assert again is not None and again > epoch

    async def test_lease_lost_the_database_restarted(self, state: StateHarness) -> None:
        """A restart of the database drops its connections: an advisory lock
        held by one goes with it, and a standby took it while the holder went
        on working. The lease outlives the restart: no standby takes it, and
        the holder renews it, the same hold, on a new connection."""
        first, second = state.holder(NAME, ttl_s=TTL_S), state.holder(NAME, ttl_s=TTL_S)
        epoch = await first.try_hold()
        assert epoch is not None
        await state.restart()
        assert await second.try_hold() is None
        failures = 0
        while True:
            try:
                renewed = await first.try_hold()
                break
            except TRANSIENT:
                # The holder's statement on the connection that was cut.
                failures += 1
                assert failures == 1, "a holder renews on a new connection after one failure"
        assert renewed == epoch
        assert await second.try_hold() is None


class TestMemorySingleton(SingletonContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresSingleton(SingletonContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
