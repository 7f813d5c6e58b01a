"""A retry taken before another batch listed a newer version of its record
is dropped, not decided: on in-memory ports."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from tablesync.core.effects import BatchEffects, DueRecord, StatusChange
from tablesync.core.plan import JobContext
from tablesync.ports.claims import ClaimProof
from tablesync.runtime.applier import RETRY_TOPIC, Item
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline


def test_a_retry_of_a_listing_replaced_since_is_not_decided() -> None:
    """Seed instances 400503: an instance took the retry of a record listed
    pending; before it applied it, another instance listed a user's newer
    version of that record. The retry, decided, listed the older version
    over the newer one, and the user's edit never reached the other side."""

    async def body() -> None:
        p = await pipeline()
        customer = p.sides["bc"].user_create("customers", {"displayName": "Old"})
        older = p.item(customer, 0)
        newer = p.item(
            replace(customer, modified_at=customer.modified_at + timedelta(seconds=5)), 1
        )
        await p.stores.apply_state.commit(
            BatchEffects(
                CUSTOMER,
                statuses=[
                    StatusChange(
                        CUSTOMER,
                        "bc",
                        customer.id,
                        "pending",
                        "lookup",
                        "waiting",
                        None,
                        p.clock.now(),
                        None,
                        newer.raw,
                    )
                ],
            )
        )
        taken = DueRecord(CUSTOMER, "bc", customer.id, "pending", "waiting", 1, 1, older.raw)
        retry = Item(older.event, older.raw, JobContext(None, "retry"), RETRY_TOPIC, 0, None, taken)

        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([retry], effects)

        assert effects.couplings == [] and effects.statuses == [] and not effects.counters
        assert p.sides["dataverse"].rows("accounts") == []
        listed = await p.stores.apply_state.statuses_of(CUSTOMER, "bc", [customer.id])
        assert listed[customer.id].event == newer.raw

        # Still the listing: the retry is decided as ever.
        current = replace(
            retry, raw=newer.raw, event=newer.event, retry=replace(taken, event=newer.raw)
        )
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([current], effects)
        assert effects.couplings

    on_virtual_time(body)


def test_a_retry_whose_claim_is_cut_before_its_commit_is_taken_again() -> None:
    """Fault suite seed 77123401: an instance frozen past its session timeout
    resumed in the middle of a retry; its claim's connection had been cut, the
    commit refused it (``ClaimLost``), and the refusal ended the service. The
    retry is dropped instead, and taken again once its lease ends."""

    async def body() -> None:
        p = await pipeline()
        customer = p.sides["bc"].user_create(
            "customers", {"displayName": "Listed", "number": "C900"}
        )
        listed = p.item(customer, 0)
        await p.stores.apply_state.commit(
            BatchEffects(
                CUSTOMER,
                statuses=[
                    StatusChange(
                        CUSTOMER,
                        "bc",
                        customer.id,
                        "failed",
                        "error",
                        "refused once",
                        None,
                        p.clock.now(),
                        None,
                        listed.raw,
                    )
                ],
            )
        )
        service = p.apply()
        state = p.stores.apply_state
        commit = state.commit
        cut: list[object] = []

        async def cut_once(effects: BatchEffects, *, claim: ClaimProof | None = None) -> None:
            if claim is not None and not cut:
                cut.append(claim)
                service.claims.drop()  # type: ignore[attr-defined]
            await commit(effects, claim=claim)

        state.commit = cut_once  # type: ignore[method-assign]
        stop = asyncio.Event()
        running = asyncio.ensure_future(service.run(stop))

        async def synced() -> bool:
            pair = await p.stores.couplings.by_ids(CUSTOMER, "bc", [customer.id])
            left = await state.statuses_of(CUSTOMER, "bc", [customer.id])
            return customer.id in pair and not left

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 300
        while not await synced():
            assert not running.done(), running
            assert loop.time() < deadline, "the retry was not taken again in time"
            await asyncio.sleep(0.5)
        assert cut
        stop.set()
        await running

    on_virtual_time(body)
