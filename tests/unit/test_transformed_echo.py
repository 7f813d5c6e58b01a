"""A bidirectional field with transformation rules towards Dataverse, through
apply on in-memory ports: a user's edit crosses once, its transformed value
comes back as Dataverse's change and is known for what it is, and the sides
are at rest; a second pass over both writes nothing. The rules double every
X, so a transformed value taken for a change would go round without end."""

from __future__ import annotations

import copy
from typing import Any

from tablesync.core.effects import BatchEffects
from tablesync.core.events import Side
from tablesync.core.records import Row
from tests.capturing import on_virtual_time
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.mempipeline import CUSTOMER, Pipeline, pipeline

_TABLES: dict[Side, str] = {"bc": "customers", "dataverse": "accounts"}


def _document() -> dict[str, Any]:
    mapping = copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][CUSTOMER])
    (name,) = [f for f in mapping["fields"] if f.get("bc") == "displayName"]
    name.update(
        transformation_rules=["uppercase", {"type": "replace", "find": "X", "replace_with": "XX"}],
        transformation_direction="to_integration",
    )
    return {"mappings": {CUSTOMER: mapping}}


class Rounds:
    """Every version of a record either side holds is delivered to apply
    once, in rounds, the way capture would publish each change."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.seen: dict[tuple[Side, str], object] = {}
        self.offsets: dict[Side, int] = {"bc": 0, "dataverse": 0}
        self.delivered = 0

    def _new(self, side: Side) -> list[Row]:
        rows = self.p.sides[side].rows(_TABLES[side])
        return [r for r in rows if self.seen.get((side, r.id)) != (r.modified_at, r.etag)]

    async def round(self) -> int:
        """Delivers each side's new versions; how many there were."""
        count = 0
        for side in ("bc", "dataverse"):
            for row in self._new(side):
                self.seen[(side, row.id)] = (row.modified_at, row.etag)
                item = self.p.item(row, self.offsets[side], side=side)
                self.offsets[side] += 1
                effects = BatchEffects(CUSTOMER)
                await self.p.applier().apply([item], effects)
                await self.p.stores.apply_state.commit(effects)
                count += 1
        self.delivered += count
        return count

    async def settle(self, *, most: int = 8) -> None:
        for _ in range(most):
            if not await self.round():
                return
        raise AssertionError(f"still changing after {most} rounds: a ping-pong")


def test_a_transformed_value_crosses_once_and_its_echo_writes_nothing_back() -> None:
    async def body() -> None:
        p = await pipeline(_document())
        bc, dv = p.sides["bc"], p.sides["dataverse"]
        made = bc.user_create(
            "customers", {"number": "C1", "displayName": "Box", "blocked": " ", "city": "Oslo"}
        )
        rounds = Rounds(p)
        await rounds.settle()
        [account] = dv.rows("accounts")
        assert account.fields["name"] == "BOXX"
        assert [r.fields["displayName"] for r in bc.rows("customers")] == ["Box"]

        # A user's edit of another field: the name is compared as the rules make it.
        bc.user_update("customers", made.id, {"city": "Bergen"})
        await rounds.settle()
        [account] = dv.rows("accounts")
        assert (account.fields["name"], account.fields["address1_city"]) == ("BOXX", "Bergen")
        [customer] = bc.rows("customers")
        assert customer.fields["displayName"] == "Box"

        # A user's edit in Dataverse of another field: its name, the rules'
        # work, is not taken for a change of BC's.
        dv.user_update("accounts", account.id, {"address1_city": "Tromso"})
        await rounds.settle()
        [customer] = bc.rows("customers")
        assert (customer.fields["displayName"], customer.fields["city"]) == ("Box", "Tromso")
        [account] = dv.rows("accounts")
        assert account.fields["name"] == "BOXX"

        # A second pass over both sides' records as they are writes nothing.
        versions = {
            s: [(r.modified_at, r.etag) for r in p.sides[s].rows(_TABLES[s])] for s in _TABLES
        }
        rounds.seen.clear()
        assert await rounds.round() == 2
        after = {s: [(r.modified_at, r.etag) for r in p.sides[s].rows(_TABLES[s])] for s in _TABLES}
        assert after == versions

    on_virtual_time(body)
