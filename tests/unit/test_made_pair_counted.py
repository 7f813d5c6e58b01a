"""The pair a crashed create made, found with its new record deleted by a
user: the event that settles it removes the pair and counts that removal,
once on its partition; the insert the crashed attempt made counts too, in
the job of its direction, apart from that partition. On in-memory ports."""

from __future__ import annotations

import uuid

from tablesync.core.effects import BatchEffects, Intent
from tablesync.runtime.applier import RETRY_TOPIC
from tests.capturing import on_virtual_time
from tests.mempipeline import CUSTOMER, pipeline


def test_the_insert_of_a_dead_attempt_counts_apart_from_the_event_removing_its_pair() -> None:
    """Seed faults 300349: the customer's one event counted inserted and
    deleted on its partition, more outcomes than events there."""

    async def body() -> None:
        p = await pipeline()
        customer = p.sides["bc"].user_create(
            "customers", {"displayName": "Made", "number": "C7", "blocked": " "}
        )
        state = p.stores.apply_state
        # The account was made (the side answered) and deleted by a user
        # before the attempt that made it committed.
        account_id = str(uuid.uuid4())
        await state.record_intents([Intent(CUSTOMER, "bc", customer.id, account_id, p.clock.now())])
        await state.record_made(CUSTOMER, [("bc", customer.id, account_id)])

        item = p.item(customer, 0)
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([item], effects)
        await state.commit(effects)

        assert p.sides["bc"].rows("customers") == []
        counted: dict[tuple[str, str], dict[str, int]] = {}
        for job in await p.stores.jobs.listing(mapping=CUSTOMER, include_empty_continuous=True):
            for topic in (item.topic, RETRY_TOPIC):
                counts = await p.stores.jobs.partition_counts(job.job_id, topic, 0)
                if any(counts.values()):
                    counted[(job.direction, topic)] = {k: v for k, v in counts.items() if v}
        assert counted == {
            ("from_integration", item.topic): {"deleted": 1, "uncoupled": 1},
            ("to_integration", RETRY_TOPIC): {"inserted": 1},
        }

    on_virtual_time(body)


def test_a_create_of_the_batch_is_not_found_again_by_its_later_versions() -> None:
    """Seed instances 400600: a batch created the account of a customer, the
    user deleted the account, and the next version removed the pair; each
    later version in the batch found the create's intent (open until the
    commit) and took the batch's own create for an interrupted one: counted
    inserted once more each, and not as themselves."""

    async def body() -> None:
        p = await pipeline()
        bc, dv = p.sides["bc"], p.sides["dataverse"]
        values = {"displayName": "Made", "number": "C8", "blocked": " "}
        versions = [bc.user_create("customers", values)]
        for phone in ("1", "2"):
            versions.append(bc.user_update("customers", versions[0].id, {"phoneNumber": phone}))
        items = [p.item(row, offset) for offset, row in enumerate(versions)]
        plain = dv._pause

        async def deleted_once_made(what: str) -> None:
            await plain(what)
            if what == "dataverse.write accounts applied":
                for row in dv.rows("accounts"):
                    dv.user_delete("accounts", row.id)

        dv._pause = deleted_once_made  # type: ignore[method-assign]
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply(items, effects)
        await p.stores.apply_state.commit(effects)

        assert bc.rows("customers") == [] and dv.rows("accounts") == []
        counted: dict[str, dict[str, int]] = {}
        for job in await p.stores.jobs.listing(mapping=CUSTOMER, include_empty_continuous=True):
            for topic in (items[0].topic, RETRY_TOPIC):
                counts = await p.stores.jobs.partition_counts(job.job_id, topic, 0)
                for k, v in counts.items():
                    if v:
                        key = f"{job.direction} {topic}"
                        counted.setdefault(key, {})[k] = counted.get(key, {}).get(k, 0) + v
        # Created, then removed, then a version of a record deleted since.
        assert counted == {
            f"to_integration {items[0].topic}": {"inserted": 1, "unchanged": 1},
            f"from_integration {items[0].topic}": {"deleted": 1, "uncoupled": 1},
        }

    on_virtual_time(body)
