"""The ``PairClaims`` port: what every implementation must do, on memory and on
PostgreSQL. A claim is what keeps two apply instances from deciding one pair at
once, so each test has two holders, as two instances are."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest

from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.adapters.postgres.claims import PostgresPairClaims
from tablesync.errors import ClaimLost, ClaimsBusy
from tablesync.ports.claims import PairClaims, PairKey
from tests.contract.state_fixtures import (
    StateHarness,
    effects,
    memory_state_fixture,  # noqa: F401
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)

MAPPING = "CUSTOMER"
WAIT_S = 0.3


def record(side: str = "bc") -> PairKey:
    return (side, str(uuid.uuid4()))  # type: ignore[return-value]


@dataclass
class Claims:
    state: StateHarness
    _new: Callable[[], PairClaims]
    _cut: Callable[[PairClaims], Awaitable[None]]
    made: list[PairClaims] = field(default_factory=list)

    def holder(self) -> PairClaims:
        """A new holder: another instance's claims."""
        made = self._new()
        self.made.append(made)
        return made

    async def cut(self, holder: PairClaims) -> None:
        """The holder's connection ends under it (a restart, a network cut)."""
        await self._cut(holder)


class PairClaimsContract:
    @pytest.fixture
    def claims(self) -> Claims:
        raise NotImplementedError

    async def test_records_held_by_one_holder_make_another_wait_then_give_up(
        self, claims: Claims
    ) -> None:
        a, b = claims.holder(), claims.holder()
        shared, only_b = record(), record("dataverse")
        await a.take(MAPPING, {shared}, wait_s=WAIT_S)
        with pytest.raises(ClaimsBusy, match="held by another instance"):
            await b.take(MAPPING, {only_b, shared}, wait_s=WAIT_S)
        # Nothing of a take that gave up is held: a third holder gets the rest.
        c = claims.holder()
        await c.take(MAPPING, {only_b}, wait_s=WAIT_S)

    async def test_a_waiting_take_gets_the_records_once_they_are_released(
        self, claims: Claims
    ) -> None:
        a, b = claims.holder(), claims.holder()
        shared = record()
        held = await a.take(MAPPING, {shared}, wait_s=WAIT_S)
        waiting = asyncio.create_task(b.take(MAPPING, {shared, record()}, wait_s=10.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        await held.release()
        got = await asyncio.wait_for(waiting, timeout=10.0)
        assert shared in got.keys
        with pytest.raises(ClaimsBusy):
            await a.take(MAPPING, {shared}, wait_s=WAIT_S)

    async def test_other_records_and_other_mappings_do_not_exclude_each_other(
        self, claims: Claims
    ) -> None:
        a, b = claims.holder(), claims.holder()
        bc = record()
        await a.take(MAPPING, {bc}, wait_s=WAIT_S)
        await b.take(MAPPING, {record()}, wait_s=WAIT_S)
        await b.take("VENDOR", {bc}, wait_s=WAIT_S)
        await b.take(MAPPING, {("dataverse", bc[1])}, wait_s=WAIT_S)

    async def test_extend_adds_free_records_and_nothing_when_one_is_held(
        self, claims: Claims
    ) -> None:
        a, b = claims.holder(), claims.holder()
        mine, theirs, free = record(), record(), record("dataverse")
        claim = await a.take(MAPPING, {mine}, wait_s=WAIT_S)
        await b.take(MAPPING, {theirs}, wait_s=WAIT_S)
        assert not await claim.extend({free, theirs})
        assert claim.keys == {mine}
        # The free one was not kept by the extension that failed.
        probe = await claims.holder().take(MAPPING, {free}, wait_s=WAIT_S)
        await probe.release()
        assert await claim.extend({free})
        assert claim.keys == {mine, free}
        with pytest.raises(ClaimsBusy):
            await b.take(MAPPING, {free}, wait_s=WAIT_S)
        await claim.release()
        await b.take(MAPPING, {mine, free}, wait_s=WAIT_S)

    async def test_a_holder_that_dies_frees_its_records(self, claims: Claims) -> None:
        a, b = claims.holder(), claims.holder()
        shared = record()
        await a.take(MAPPING, {shared}, wait_s=WAIT_S)
        await claims.cut(a)
        await b.take(MAPPING, {shared}, wait_s=10.0)

    async def test_a_commit_holds_only_while_its_claim_does(self, claims: Claims) -> None:
        a, b = claims.holder(), claims.holder()
        apply_state = claims.state.stores.apply_state
        tp = ("cdc.bc.customers", 0)
        claim = await a.take(MAPPING, {record(), record("dataverse")}, wait_s=WAIT_S)
        await apply_state.commit(effects(positions={tp: 5}), claim=claim.proof())
        assert await apply_state.positions(MAPPING, [tp[0]]) == {tp: 5}

        await claims.cut(a)
        taken = await b.take(MAPPING, claim.keys, wait_s=10.0)
        with pytest.raises(ClaimLost, match="claim on the batch's records was lost"):
            await apply_state.commit(effects(positions={tp: 9}), claim=claim.proof())
        assert await apply_state.positions(MAPPING, [tp[0]]) == {tp: 5}
        await apply_state.commit(effects(positions={tp: 9}), claim=taken.proof())
        assert await apply_state.positions(MAPPING, [tp[0]]) == {tp: 9}


class TestMemoryPairClaims(PairClaimsContract):
    @pytest.fixture
    def claims(self, memory_state: StateHarness) -> Claims:
        database = memory_state.stores.apply_state.database  # type: ignore[attr-defined]

        async def cut(holder: PairClaims) -> None:
            assert isinstance(holder, MemoryPairClaims)
            holder.drop()

        return Claims(memory_state, lambda: MemoryPairClaims(database), cut)


@pytest.mark.integration
class TestPostgresPairClaims(PairClaimsContract):
    @pytest.fixture
    async def claims(
        self,
        postgres_state: StateHarness,
        state_dsn: str,  # noqa: F811
    ) -> AsyncIterator[Claims]:
        async def cut(holder: PairClaims) -> None:
            assert isinstance(holder, PostgresPairClaims)
            conn = await asyncpg.connect(state_dsn)
            try:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", holder.pid)
            finally:
                await conn.close()

        made = Claims(postgres_state, lambda: PostgresPairClaims(state_dsn), cut)
        try:
            yield made
        finally:
            for holder in made.made:
                await holder.close()
