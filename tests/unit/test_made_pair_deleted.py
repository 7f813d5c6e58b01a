"""Both records of a pair a crashed create made are gone, one deleted by a
user and one by the attempt that settled the create and died before its
commit: the deletion event of the second settles that attempt's announced
deletion, and the create's intent. On in-memory ports."""

from __future__ import annotations

import uuid

from tablesync.core.effects import BatchEffects, Intent, WriteTarget
from tablesync.core.events import RecordChanged
from tablesync.core.plan import JobContext
from tablesync.runtime.applier import Item
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline


def test_the_deletion_a_dead_attempt_made_is_settled_by_its_echo() -> None:
    """Seed faults 500906: the announced deletion of the BC customer stayed
    open for ever, since the customer's deletion event found no pair."""

    async def body() -> None:
        p = await pipeline()
        customer = p.sides["bc"].user_create("customers", {"displayName": "Made", "number": "C7"})
        account_id = str(uuid.uuid4())
        state = p.stores.apply_state
        # The create of the account was made (the side answered), a user
        # deleted the account, an attempt removed the customer, and died.
        await state.record_intents([Intent(CUSTOMER, "bc", customer.id, account_id, p.clock.now())])
        await state.record_made(CUSTOMER, [("bc", customer.id, account_id)])
        removal: WriteTarget = ("bc", customer.id, "delete")
        await state.announce_writes(CUSTOMER, [removal])
        p.sides["bc"].user_delete("customers", customer.id)

        gone = RecordChanged("bc", "customers", customer.id, "delete", p.clock.now(), p.clock.now())
        topic = p.topics.cdc("bc", "customers")
        item = Item(gone, p.codec.encode(gone), JobContext(None, "continuous"), topic, 0, 1)
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([item], effects)
        await state.commit(effects)

        assert await state.announced_writes(CUSTOMER, [removal]) == set()
        assert await state.intents_of(CUSTOMER, "bc", [customer.id]) == {}

    on_virtual_time(body)
