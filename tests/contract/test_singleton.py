"""The ``Singleton`` port: what every implementation must do."""

from __future__ import annotations

import pytest

from tests.contract.state_fixtures import (
    StateHarness,
    memory_state_fixture,  # noqa: F401
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)

KEY = 0x7473_0001


class SingletonContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_one_holder_at_a_time(self, state: StateHarness) -> None:
        first, second = state.holder(KEY), state.holder(KEY)
        assert await first.try_hold()
        assert not await second.try_hold()
        assert await first.try_hold()  # still this holder's
        assert not await second.try_hold()

    async def test_a_released_hold_is_free_for_another_holder(self, state: StateHarness) -> None:
        first, second = state.holder(KEY), state.holder(KEY)
        assert await first.try_hold()
        await second.release()  # not its hold: nothing changes
        assert not await second.try_hold()
        await first.release()
        assert await second.try_hold()
        assert not await first.try_hold()
        await first.release()  # releasing what one does not hold is harmless
        await second.release()
        await second.release()
        assert await first.try_hold()

    async def test_holds_of_different_keys_do_not_exclude_each_other(
        self, state: StateHarness
    ) -> None:
        assert await state.holder(KEY).try_hold()
        assert await state.holder(KEY + 1).try_hold()


class TestMemorySingleton(SingletonContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresSingleton(SingletonContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
