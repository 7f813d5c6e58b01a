"""Invariant 9, no lost edit, with the interleavings driven rather than hoped for.

Apply writes a Dataverse account's change (v1) to its coupled BC customer and
dies before its commit; the user then changes the account again (v2). The
next attempt meets three events: the BC customer as tablesync left it (the
echo of v1, which no coupling records), v1 again and v2. In whatever order
they are decided, one after another or side by side, v2 must end on both
sides: the echo is tablesync's own write, never a user's change that wins the
conflict (CUSTOMER: BC wins) and overwrites v2 with v1.

The real applier runs against both emulators and the state database; a crash
is an attempt whose effects are never committed. The last test is what such a
crash leaves half-done in a deletion: completed, and counted once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import pytest

from tablesync.adapters.odata import open_api
from tablesync.adapters.postgres.apply_state import ApplyStateStore, BatchEffects
from tablesync.adapters.postgres.couplings import CouplingStore, write_couplings
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import RecordChanged, Side
from tablesync.core.mappings import MappingSet
from tablesync.core.plan import JobContext
from tablesync.core.records import Row
from tablesync.ports.api import SideApi
from tablesync.ports.clock import SystemClock
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tests.conftest import InfraEndpoints
from tests.integration.stack import Stack, open_stack

pytestmark = pytest.mark.integration

_CONTINUOUS = JobContext(job_id=None, kind="continuous")
_TABLES: dict[Side, str] = {"bc": "customers", "dataverse": "accounts"}


@pytest.fixture
async def stack(infra: InfraEndpoints, state_dsn: str, topic_prefix: str) -> AsyncIterator[Stack]:
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers,
        state_dsn=state_dsn,
        topic_prefix=topic_prefix,
        demo=False,
    ) as s:
        yield s


@dataclass
class _Pair:
    stack: Stack
    apis: dict[Side, SideApi]
    bc_id: str
    dv_id: str
    offsets: int = 0

    def applier(self, mappings: object) -> Applier:
        """A fresh applier: what a restarted apply process starts with."""
        pool = self.stack.pool
        jobs = JobStore(pool)
        return Applier(
            "CUSTOMER",
            mappings,  # type: ignore[arg-type]
            self.apis,
            CouplingStore(pool),
            ApplyStateStore(pool),
            JobEnsurer("CUSTOMER", jobs.continuous_job),
            self.stack.settings.sync,
            SystemClock(),
        )

    async def read(self, side: Side) -> Row:
        record_id = self.bc_id if side == "bc" else self.dv_id
        rows = await self.apis[side].get_many(_TABLES[side], [record_id])
        return rows[record_id]

    async def event(self, side: Side) -> Item:
        """The record as capture would publish it now."""
        row = await self.read(side)
        self.offsets += 1
        event = RecordChanged(
            side=side,
            table=_TABLES[side],
            record_id=row.id,
            op="upsert",
            modified_at=row.modified_at,
            captured_at=row.modified_at,
            fields=row.fields,
            etag=row.etag,
            modified_by=row.modified_by,
        )
        topic = f"{self.stack.settings.topic_prefix}cdc.{side}.{_TABLES[side]}"
        return Item(event, b"", _CONTINUOUS, topic, 0, self.offsets)

    async def names(self) -> tuple[object, object]:
        return (
            (await self.read("bc")).fields["displayName"],
            (await self.read("dataverse")).fields["name"],
        )


@pytest.fixture
async def pair(stack: Stack) -> AsyncIterator[_Pair]:
    """A BC customer and a Dataverse account, coupled and in sync at v0."""
    settings = stack.settings
    apis: dict[Side, SideApi] = {
        "bc": await open_api("bc", settings.bc),
        "dataverse": await open_api("dataverse", settings.dataverse),
    }
    try:
        number = f"LE{uuid.uuid4().hex[:8].upper()}"
        customer = await stack.bc_post("customers", {"number": number, "displayName": "Edit v0"})
        account = await stack.dv_post(
            "accounts", {"accountnumber": number, "name": "Edit v0", "customertypecode": 3}
        )
        p = _Pair(stack, apis, str(customer["id"]), str(account["accountid"]))
        bc, dv = await p.read("bc"), await p.read("dataverse")
        coupling = Coupling(
            "CUSTOMER",
            bc.id,
            dv.id,
            number,
            Stamp(bc.modified_at, bc.etag),
            Stamp(dv.modified_at, dv.etag),
        )
        async with stack.pool.acquire() as conn:
            await write_couplings(conn, [(coupling, "to_integration")])
        yield p
    finally:
        for api in apis.values():
            await api.aclose()


Order = Literal["echo first", "account first", "side by side"]


@pytest.mark.parametrize("order", ["echo first", "account first", "side by side"])
async def test_a_write_lost_to_a_crash_never_overwrites_a_later_edit(
    stack: Stack, pair: _Pair, order: Order
) -> None:
    mappings = await MappingStore(stack.pool).load()
    assert mappings.get("CUSTOMER").update_conflict == "send_to_integration"

    await stack.dv_patch("accounts", pair.dv_id, {"name": "Edit v1"})
    v1 = await pair.event("dataverse")
    # The attempt that dies: v1 is written to BC, nothing of it committed.
    crashed = pair.applier(mappings)
    await crashed.apply([v1], BatchEffects("CUSTOMER"))
    assert await pair.names() == ("Edit v1", "Edit v1")

    await stack.dv_patch("accounts", pair.dv_id, {"name": "Edit v2"})
    v2 = await pair.event("dataverse")
    echo = await pair.event("bc")

    restarted = pair.applier(mappings)
    batches: Sequence[Sequence[Sequence[Item]]] = {
        "echo first": [[[echo]], [[v1, v2]]],
        "account first": [[[v1, v2]], [[echo]]],
        "side by side": [[[echo], [v1, v2]]],
    }[order]
    state = ApplyStateStore(stack.pool)
    for groups in batches:
        effects = BatchEffects("CUSTOMER")
        await restarted.apply_side_by_side(groups, effects)
        await state.commit(effects)

    assert await pair.names() == ("Edit v2", "Edit v2")
    open_writes = await stack.pool.fetch("SELECT side, kind FROM write_intents")
    assert [dict(r) for r in open_writes] == []
    # And the echo of that last write, read back, changes nothing more.
    last = pair.applier(mappings)
    effects = BatchEffects("CUSTOMER")
    await last.apply([await pair.event("bc")], effects)
    await state.commit(effects)
    assert await pair.names() == ("Edit v2", "Edit v2")


async def test_a_pair_a_crash_left_half_removed_is_removed_and_counted_once(
    stack: Stack, pair: _Pair
) -> None:
    """The user edits the account, then deletes it. Apply writes the edit to
    BC, deletes the BC customer for the deletion, and dies before its commit.
    Replayed in order, the edit meets its counterpart gone: by tablesync's own
    hand, so the pair's removal is completed and the deletion counted (it was
    taken for a deletion in BC: uncoupled, the deletion never counted, its
    announcement left open)."""
    stored = await MappingStore(stack.pool).load()
    mappings = MappingSet(
        tuple(replace(m, deletion="delete") if m.name == "CUSTOMER" else m for m in stored.mappings)
    )
    await stack.dv_patch("accounts", pair.dv_id, {"name": "Edit v1"})
    edit = await pair.event("dataverse")
    gone = await stack.dv.delete(f"/api/data/v9.2/accounts({pair.dv_id})")
    assert gone.status_code == 204, gone.text
    now = datetime.now(UTC)
    pair.offsets += 1
    deletion = Item(
        RecordChanged(
            side="dataverse",
            table="accounts",
            record_id=pair.dv_id,
            op="delete",
            modified_at=now,
            captured_at=now,
        ),
        b"",
        _CONTINUOUS,
        edit.topic,
        0,
        pair.offsets,
    )

    crashed = pair.applier(mappings)
    await crashed.apply([edit, deletion], BatchEffects("CUSTOMER"))
    assert not await pair.apis["bc"].get_many("customers", [pair.bc_id])

    restarted = pair.applier(mappings)
    effects = BatchEffects("CUSTOMER")
    await restarted.apply([edit, deletion], effects)
    await ApplyStateStore(stack.pool).commit(effects)

    counted = await stack.pool.fetch(
        "SELECT j.direction, sum(p.deleted) AS deleted, sum(p.uncoupled) AS uncoupled "
        "FROM jobs j JOIN job_partitions p USING (job_id) GROUP BY j.direction"
    )
    assert {r["direction"]: (r["deleted"], r["uncoupled"]) for r in counted} == {
        "from_integration": (1, 1)
    }
    assert not await stack.pool.fetch("SELECT * FROM couplings")
    assert [dict(r) for r in await stack.pool.fetch("SELECT * FROM write_intents")] == []
