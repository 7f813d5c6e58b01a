"""A coupled record's deletion stays on the errors list until an operator acts:
its event, applied after find-deleted listed it, does not take it off. On
in-memory ports, on virtual time."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace

from tablesync.adapters.memory.claims import MemoryPairClaims
from tablesync.core.effects import BatchEffects
from tablesync.core.stored import Selection
from tablesync.runtime.claiming import apply_claimed
from tests.capturing import on_virtual_time
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.mempipeline import CUSTOMER, pipeline
from tests.unit.test_claimed_actions import Commands, _customer


def test_a_deletion_listed_by_find_deleted_stays_listed_when_its_event_is_applied() -> None:
    async def body() -> None:
        mapping = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][CUSTOMER])
        # BC's default for customers: the counterpart stays and is listed.
        mapping["deletion"] = "none"
        p = await pipeline({"mappings": {CUSTOMER: mapping}})
        customer = _customer(p)
        applier = p.applier()
        effects = BatchEffects(CUSTOMER)
        await applier.apply([p.item(customer, 0)], effects, None)
        await p.stores.apply_state.commit(effects)
        account = p.sides["dataverse"].rows("accounts")[0]
        # Later, on virtual time: find-deleted looks at couplings made before it starts.
        await asyncio.sleep(60)
        p.sides["dataverse"].user_delete("accounts", account.id)

        # The operator's find-deleted comes first and lists the deletion.
        found = await Commands(p).operator().find_deleted(CUSTOMER)
        assert dict(found.counts) == {"deleted": 1}
        listed = await p.stores.problems.records(Selection(mapping=CUSTOMER))
        assert [(r.source_side, r.source_id) for r in listed] == [("dataverse", account.id)]

        # Then capture's event of that deletion reaches apply.
        item = p.item(account, 1, side="dataverse")
        deletion = replace(item, event=replace(item.event, op="delete", fields={}))
        await apply_claimed(
            p.applier(), MemoryPairClaims(p.database), p.stores.apply_state, [deletion], wait_s=5.0
        )
        still = await p.stores.problems.records(Selection(mapping=CUSTOMER))
        assert [(r.source_side, r.source_id, r.reason) for r in still] == [
            ("dataverse", account.id, "deleted")
        ]

    on_virtual_time(body)
