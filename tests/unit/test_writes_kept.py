"""What one side's writes made is kept when the other side's call beside it
fails: a later attempt finds those records by id, or knows them deleted
since, rather than creating them again. On in-memory ports."""

from __future__ import annotations

import pytest

from tablesync.core.effects import BatchEffects
from tablesync.errors import ApiUnavailable
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline


def test_a_create_on_one_side_is_kept_when_the_other_sides_write_fails() -> None:
    async def body() -> None:
        p = await pipeline()
        bc, dataverse = p.sides["bc"], p.sides["dataverse"]
        account = dataverse.user_create(
            "accounts",
            {
                "accountnumber": "D00001",
                "name": "From Dataverse",
                "statecode": 0,
                "customertypecode": 3,
            },
        )
        customer = bc.user_create("customers", {"displayName": "From BC"})
        # Dataverse applies the create, and its answer is lost.
        dataverse.faults.fail(method="write", table="accounts", applied=True)
        items = [p.item(account, 0, side="dataverse"), p.item(customer, 1)]

        with pytest.raises(ApiUnavailable):
            await p.applier().apply(items, BatchEffects(CUSTOMER))

        [made] = [r for r in bc.rows("customers") if r.fields["displayName"] == "From Dataverse"]
        intents = await p.stores.apply_state.intents_of(CUSTOMER, "dataverse", [account.id])
        # BC chose the id: kept with the intent, the record is found by it.
        assert intents[account.id].dest_id == made.id
        assert intents[account.id].made

    on_virtual_time(body)
