"""The operator's actions and replay claim the pairs they decide, as apply
instances do (``runtime.claiming``): on in-memory ports, on virtual time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.admin.routes import problem_of
from tablesync.application import Operator
from tablesync.core.effects import BatchEffects, StatusChange
from tablesync.core.events import Side
from tablesync.core.records import Row
from tablesync.core.stored import Selection
from tablesync.errors import AlreadyCoupled, CommandRefused
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaim
from tablesync.ports.log import Message
from tablesync.runtime.claiming import claim_items
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, Pipeline, pipeline, until


@dataclass
class Commands:
    """An operator on the pipeline's ports, with every claims holder its
    commands opened and every store call made since ``watch``."""

    p: Pipeline
    opened: list[MemoryPairClaims] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def operator(self) -> Operator:
        async def api(side: Side) -> SideApi:
            found: SideApi = self.p.sides[side]  # type: ignore[assignment]
            return found

        def claims() -> MemoryPairClaims:
            self.opened.append(MemoryPairClaims(self.p.database))
            return self.opened[-1]

        return Operator(
            stores=self.p.stores,
            apis=api,
            publisher=self.p.broker.publisher(),
            window=self.p.broker.window(),
            codec=self.p.codec,
            clock=self.p.clock,
            topics=self.p.topics,
            settings=self.p.settings.sync,
            claims=claims,
        )

    def watch(self) -> None:
        async def pause(what: str) -> None:
            self.calls.append(what)

        self.p.database.pause = pause


def _customer(p: Pipeline) -> Row:
    return p.sides["bc"].user_create(
        "customers", {"number": "C-1", "displayName": "Contoso", "blocked": " "}
    )


async def _listed_failed(p: Pipeline, customer: Row) -> None:
    """The customer in the errors list: an earlier attempt failed."""
    status = StatusChange(
        CUSTOMER,
        "bc",
        customer.id,
        "failed",
        "api",
        "refused",
        None,
        p.clock.now(),
        None,
        p.item(customer, 0).raw,
    )
    await p.stores.apply_state.commit(BatchEffects(CUSTOMER, statuses=[status]))


async def _deciding(p: Pipeline, customer: Row) -> tuple[PairClaim, BatchEffects]:
    """An apply instance in the middle of a batch of the customer's create:
    its pair claimed, the account created and coupled in its effects, not
    committed yet."""
    applier = p.applier()
    item = p.item(customer, 0)
    claim = await claim_items(applier, MemoryPairClaims(p.database), [item], wait_s=30.0)
    assert claim is not None
    effects = BatchEffects(CUSTOMER)
    await applier.apply([item], effects, claim)
    assert [c.bc_id for c, _ in effects.couplings] == [customer.id]
    assert len(p.sides["dataverse"].rows("accounts")) == 1
    return claim, effects


async def _coupled(p: Pipeline, customer: Row) -> str | None:
    c = await p.stores.couplings.get(CUSTOMER, "bc", customer.id)
    return None if c is None else c.dv_id


def test_a_retry_waits_for_an_instance_deciding_its_pair_and_decides_on_its_commit() -> None:
    """Without a claim the retry decided the customer while an apply instance
    had its create in hand, on the coupling as it was before (none)."""

    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        await _listed_failed(p, customer)
        claim, effects = await _deciding(p, customer)
        account = p.sides["dataverse"].rows("accounts")[0].id
        commands = Commands(p)
        commands.watch()

        retry = asyncio.create_task(commands.operator().retry(Selection(record_ids=(customer.id,))))
        await until(lambda: "claims.take" in commands.calls, within_s=5.0)
        assert not retry.done()
        assert "apply_state.commit" not in commands.calls
        assert await _coupled(p, customer) is None

        await p.stores.apply_state.commit(effects, claim=claim.proof())
        await claim.release()
        result = await asyncio.wait_for(retry, timeout=10.0)

        # Decided on the instance's coupling: the version it synced is unchanged.
        assert dict(result.counts) == {"unchanged": 1}
        assert await _coupled(p, customer) == account
        assert [r.id for r in p.sides["dataverse"].rows("accounts")] == [account]
        assert await p.stores.problems.records(Selection(mapping=CUSTOMER)) == []
        assert commands.opened and not p.database.claims

    on_virtual_time(body)


def test_a_replay_waits_for_an_instance_deciding_its_pair_and_decides_on_its_commit() -> None:
    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        item = p.item(customer, 0)
        since = p.clock.now() - timedelta(minutes=1)
        await p.broker.publisher().publish(Message(item.topic, customer.id.encode(), item.raw))
        claim, effects = await _deciding(p, customer)
        account = p.sides["dataverse"].rows("accounts")[0].id
        commands = Commands(p)
        commands.watch()

        replay = asyncio.create_task(commands.operator().replay(CUSTOMER, since=since))
        await until(lambda: "claims.take" in commands.calls, within_s=5.0)
        assert not replay.done()
        assert "apply_state.commit" not in commands.calls

        await p.stores.apply_state.commit(effects, claim=claim.proof())
        await claim.release()
        result = await asyncio.wait_for(replay, timeout=10.0)

        assert result.events == 1
        assert {k: v for k, v in result.counts.items() if v} == {"unchanged": 1}
        assert await _coupled(p, customer) == account
        assert [r.id for r in p.sides["dataverse"].rows("accounts")] == [account]
        assert not p.database.claims

    on_virtual_time(body)


def test_records_held_past_the_wait_refuse_the_command_naming_the_mapping() -> None:
    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        await _listed_failed(p, customer)
        holder = MemoryPairClaims(p.database)
        await holder.take(CUSTOMER, [("bc", customer.id)], wait_s=1.0)
        commands = Commands(p)
        operator = commands.operator()
        started = asyncio.get_running_loop().time()

        with pytest.raises(CommandRefused) as refused:
            await operator.retry(Selection(record_ids=(customer.id,)))

        waited = asyncio.get_running_loop().time() - started
        wait_s = p.settings.sync.claim_wait_s
        assert wait_s <= waited < wait_s + 1.0
        message = str(refused.value)
        assert message.startswith(f"{CUSTOMER}: retry waited more than {wait_s:g} s for 1 records")
        assert "TABLESYNC_SYNC__CLAIM_WAIT_S" in message
        problem = problem_of(refused.value)
        assert problem is not None and problem.status == 409
        # Nothing decided, and the command's own claims closed.
        assert p.sides["dataverse"].rows("accounts") == []
        assert set(p.database.claims.values()) == {holder}

        with pytest.raises(CommandRefused, match=rf"^{CUSTOMER}: uncouple waited more than"):
            await operator.uncouple(CUSTOMER, "bc", customer.id)

    on_virtual_time(body)


def test_a_claim_lost_before_the_commit_applies_the_records_again() -> None:
    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        await _listed_failed(p, customer)
        commands = Commands(p)
        cut: list[str] = []

        async def pause(what: str) -> None:
            if what == "apply_state.commit" and not cut:
                # The command's claims connection drops just before its commit.
                cut.append(what)
                commands.opened[-1].drop()

        p.database.pause = pause
        result = await commands.operator().retry(Selection(record_ids=(customer.id,)))

        assert cut
        accounts = p.sides["dataverse"].rows("accounts")
        assert len(accounts) == 1
        assert await _coupled(p, customer) == accounts[0].id
        assert result.counts["inserted"] == 1
        assert await p.stores.problems.records(Selection(mapping=CUSTOMER)) == []

    on_virtual_time(body)


def test_a_couple_waits_for_an_instance_creating_the_counterpart_and_refuses_on_its_commit() -> (
    None
):
    """Without a claim the operator's couple was checked on the coupling as it
    was before the instance committed (none) and replaced the instance's, which
    left the account the instance created coupled to nothing: a duplicate."""

    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        claim, effects = await _deciding(p, customer)
        made = p.sides["dataverse"].rows("accounts")[0].id
        other = p.sides["dataverse"].user_create("accounts", {"name": "Contoso Ltd"})
        commands = Commands(p)
        commands.watch()

        couple = asyncio.create_task(commands.operator().couple(CUSTOMER, customer.id, other.id))
        await until(lambda: "claims.take" in commands.calls, within_s=5.0)
        assert not couple.done()
        assert await _coupled(p, customer) is None

        await p.stores.apply_state.commit(effects, claim=claim.proof())
        await claim.release()
        with pytest.raises(AlreadyCoupled) as refused:
            await asyncio.wait_for(couple, timeout=10.0)

        assert refused.value.other_id == made
        assert await _coupled(p, customer) == made
        assert commands.opened and not p.database.claims

    on_virtual_time(body)


def test_a_couple_of_a_free_pair_is_committed_under_its_claim() -> None:
    async def body() -> None:
        p = await pipeline()
        customer = _customer(p)
        account = p.sides["dataverse"].user_create("accounts", {"name": "Contoso"})
        commands = Commands(p)
        commands.watch()
        row = await commands.operator().couple(CUSTOMER, customer.id, account.id)
        assert row.coupling.dv_id == account.id and row.coupling.bc_key == "C-1"
        assert commands.calls.index("claims.take") < commands.calls.index("apply_state.commit")
        assert await _coupled(p, customer) == account.id
        assert not p.database.claims

    on_virtual_time(body)
