"""A disabled field mapping through apply on in-memory ports: a change of that
field alone writes nothing and counts the record unchanged, not modified; a
change beside it writes only the enabled field."""

from __future__ import annotations

import copy
from typing import Any

from tablesync.core.effects import BatchEffects
from tablesync.core.records import Row
from tests.capturing import on_virtual_time
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.mempipeline import CUSTOMER, Pipeline, pipeline


def _document() -> dict[str, Any]:
    mapping = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][CUSTOMER])
    (name,) = [f for f in mapping["fields"] if f.get("bc") == "displayName"]
    name["enabled"] = False
    return {"mappings": {CUSTOMER: mapping}}


async def _apply(p: Pipeline, row: Row, offset: int) -> None:
    effects = BatchEffects(CUSTOMER)
    await p.applier().apply([p.item(row, offset)], effects)
    await p.stores.apply_state.commit(effects)


async def _counts(p: Pipeline) -> dict[str, int]:
    counted: dict[str, int] = {}
    topic = p.topics.cdc("bc", "customers")
    for job in await p.stores.jobs.listing(mapping=CUSTOMER, include_empty_continuous=True):
        for key, value in (await p.stores.jobs.partition_counts(job.job_id, topic, 0)).items():
            if value:
                counted[key] = counted.get(key, 0) + value
    return counted


def test_a_disabled_field_is_neither_written_nor_counts_a_record_modified() -> None:
    async def body() -> None:
        p = await pipeline(_document())
        bc, dv = p.sides["bc"], p.sides["dataverse"]
        made = bc.user_create(
            "customers", {"number": "C1", "displayName": "Box", "blocked": " ", "city": "Oslo"}
        )
        await _apply(p, made, 0)
        [account] = dv.rows("accounts")
        assert "name" not in account.fields or not account.fields["name"]
        assert account.fields["address1_city"] == "Oslo"
        assert await _counts(p) == {"inserted": 1}

        renamed = bc.user_update("customers", made.id, {"displayName": "Crate"})
        await _apply(p, renamed, 1)
        [after] = dv.rows("accounts")
        assert (after.modified_at, after.etag) == (account.modified_at, account.etag)
        assert await _counts(p) == {"inserted": 1, "unchanged": 1}

        moved = bc.user_update("customers", made.id, {"displayName": "Tub", "city": "Bergen"})
        await _apply(p, moved, 2)
        [after] = dv.rows("accounts")
        assert after.fields["address1_city"] == "Bergen"
        assert not after.fields.get("name")
        assert await _counts(p) == {"inserted": 1, "unchanged": 1, "modified": 1}

    on_virtual_time(body)
