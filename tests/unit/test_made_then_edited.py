"""A BC record an interrupted create made (BC chose its id, the crash lost the
answer), then edited by a user before any attempt recorded it: its number is
still the one the create sent, and BC keeps numbers unique, so its own events
wait for that create to be settled instead of coupling it as a match. The
create, decided again, finds it by the match and counts the insert it made,
keeping the user's edit. On in-memory ports."""

from __future__ import annotations

from tablesync.core.effects import BatchEffects, Intent
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline


def test_a_made_record_edited_since_waits_for_its_create_and_counts_as_inserted() -> None:
    """Seed instances 400072: the customer's edit coupled it by number and
    counted a match; the create's intent was then closed by the sweep, and the
    insert into BC was never counted."""

    async def body() -> None:
        p = await pipeline()
        bc, dv = p.sides["bc"], p.sides["dataverse"]
        account = dv.user_create(
            "accounts",
            {"name": "Made", "accountnumber": "C9", "customertypecode": 3, "statecode": 0},
        )
        state = p.stores.apply_state
        sent = {"number": "C9", "displayName": "Made"}
        await state.record_intents(
            [Intent(CUSTOMER, "dataverse", account.id, None, p.clock.now(), sent=sent)]
        )
        made = bc.user_create("customers", {**sent, "blocked": " "})
        edited = bc.user_update("customers", made.id, {"displayName": "Made by hand"})

        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([p.item(edited, 0)], effects)
        await state.commit(effects)
        assert await p.stores.couplings.by_ids(CUSTOMER, "bc", [made.id]) == {}

        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([p.item(account, 0, side="dataverse")], effects)
        await state.commit(effects)

        coupled = await p.stores.couplings.by_ids(CUSTOMER, "bc", [made.id])
        assert coupled[made.id].dv_id == account.id
        assert [r.fields["displayName"] for r in bc.rows("customers")] == ["Made by hand"]
        counted: dict[str, dict[str, int]] = {}
        for job in await p.stores.jobs.listing(mapping=CUSTOMER, include_empty_continuous=True):
            topic = p.topics.cdc("dataverse", "accounts")
            counts = await p.stores.jobs.partition_counts(job.job_id, topic, 0)
            if any(counts.values()):
                counted[job.direction] = {k: v for k, v in counts.items() if v}
        assert counted == {"from_integration": {"inserted": 1}}

    on_virtual_time(body)
