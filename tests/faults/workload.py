"""The users: a steady, seeded stream of creates, updates, deletes and
conflicting edits on both sides, and the model of what each record must look
like once everything has settled.

The model stays exact under any timing because of two rules:

- a record is either *home-edited* (only ever changed on the side it was
  created on) or *conflict-edited* (only ever changed on both sides at once,
  the losing side of its mapping's conflict policy first, the winning side
  right after). Either way the last write the suite made is the one that
  must win, so the expected values are simply those of the last write;
- a record that has contacts is never deleted, so no contact loses its parent;
- a record is changed or deleted on the side it was not created on only once
  the pair is coupled: before that, the record there is one tablesync is
  still creating (after a crash, it may be a half-made one it recovers or
  replaces), not yet the user's counterpart.

Records carry a marker the suite never changes (a customer's number, a
contact's e-mail): it tells records apart on both sides and exposes
duplicates."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tablesync.core.events import Side, other_side
from tests.faults.scope import CONTACTS, CUSTOMER, Table, conflict_winner
from tests.faults.sides import SideApi, Vanished, id_field

__all__ = ["Driver", "Ledger", "Rec"]

_CONFLICT_SHARE = 0.2
_WORDS = ("Alder", "Birch", "Cedar", "Dune", "Elm", "Fjord", "Grove", "Heath", "Isle", "Juniper")


@dataclass(eq=False)
class Rec:
    table: Table
    marker: str
    home: Side
    conflict: bool
    ids: dict[Side, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    parent: Rec | None = None
    anchored: bool = False
    deleted: bool = False
    poison: bool = False
    vanished: bool = False
    busy: bool = False
    written_at: float = 0.0
    """When the users last changed it (monotonic seconds)."""


@dataclass
class Ledger:
    """What the users did, for the figures and for the counters check."""

    changes: Counter[str] = field(default_factory=Counter)
    created: Counter[tuple[Side, str]] = field(default_factory=Counter)
    deleted: Counter[tuple[Side, str]] = field(default_factory=Counter)
    ambiguous_deletes: Counter[tuple[Side, str]] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    skipped_ops: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.changes.values())


IsCoupled = Callable[[str, Side, str], Awaitable[bool]]
"""(mapping, side, record id) -> whether tablesync has coupled the record."""


class Driver:
    def __init__(
        self, apis: dict[Side, SideApi], rng: random.Random, is_coupled: IsCoupled
    ) -> None:
        self.apis = apis
        self.rng = rng
        self.is_coupled = is_coupled
        self.recs: list[Rec] = []
        self.ledger = Ledger()
        self._serial = 0

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    # the stream

    async def run(
        self, stop: asyncio.Event, *, workers: int, rate_per_s: float, until: int
    ) -> None:
        """``workers`` users at ``rate_per_s`` changes per second in all, until
        ``stop`` is set or ``until`` changes are made."""
        pause = workers / rate_per_s

        async def worker() -> None:
            while not stop.is_set() and self.ledger.total < until:
                await self.step()
                await asyncio.sleep(pause * (0.5 + self.rng.random()))

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def step(self) -> None:
        roll = self.rng.random()
        table = CUSTOMER if self.rng.random() < 0.5 else CONTACTS
        live = [
            r
            for r in self.recs
            if r.table is table and r.home in r.ids and not (r.deleted or r.poison)
        ]
        if roll < 0.3 or len(live) < 8:
            await self.create(table, self.rng.choice(("bc", "dataverse")))
        elif roll < 0.8:
            await self.edit(self.rng.choice(live))
        else:
            await self.delete(self.rng.choice(live))

    # creates

    async def create(self, table: Table, side: Side) -> Rec | None:
        n = self._next()
        if table is CUSTOMER:
            marker = f"{'B' if side == 'bc' else 'D'}{n:06d}"
            rec = Rec(table, marker, side, conflict=self.rng.random() < _CONFLICT_SHARE)
            values = self._values(table, n)
            body = _body(table, side, values)
            body[table.marker.on(side)] = marker
            if side == "dataverse":
                body["customertypecode"] = 3
        else:
            parents = [
                r
                for r in self.recs
                if r.table is CUSTOMER
                and r.home == side
                and not (r.deleted or r.poison or r.busy)
                and side in r.ids
            ]
            if not parents:
                return await self.create(CUSTOMER, side)
            parent = self.rng.choice(parents)
            # From now on the parent is never deleted: its contacts would lose it.
            parent.anchored = True
            marker = f"{'b' if side == 'bc' else 'd'}{n:06d}@faults.example"
            rec = Rec(
                table, marker, side, conflict=self.rng.random() < _CONFLICT_SHARE, parent=parent
            )
            values = self._values(table, n)
            body = _body(table, side, values)
            body[table.marker.on(side)] = marker
            if side == "bc":
                body["type"] = "Person"
                body["companyNumber"] = parent.marker
            else:
                body["parentcustomerid_account@odata.bind"] = f"/accounts({parent.ids[side]})"
        rec.busy = True
        self.recs.append(rec)
        try:
            row = await self.apis[side].create(
                table.entity_set(side), body, (table.marker.on(side), marker)
            )
            rec.ids[side] = row[id_field(side, table.entity_set(side))]
            rec.expected = values
            rec.written_at = time.monotonic()
            self.ledger.created[(side, table.entity_set(side))] += 1
            self.ledger.changes[f"create {side} {table.entity_set(side)}"] += 1
        finally:
            rec.busy = False
        return rec

    async def create_rejected(self, k: int) -> Rec:
        """A BC customer whose number is already the account number of a
        Dataverse vendor account: Dataverse refuses the create (duplicate key)."""
        number = f"X{k:05d}"
        dv = self.apis["dataverse"]
        await dv.create(
            "accounts",
            {"name": f"Vendor twin {k}", "accountnumber": number, "customertypecode": 11},
            ("accountnumber", number),
        )
        self.ledger.created[("dataverse", "accounts")] += 1
        rec = Rec(CUSTOMER, number, "bc", conflict=False, poison=True)
        self.recs.append(rec)
        body = _body(CUSTOMER, "bc", self._values(CUSTOMER, self._next()))
        body["number"] = number
        row = await self.apis["bc"].create("customers", body, ("number", number))
        rec.ids["bc"] = row["id"]
        self.ledger.created[("bc", "customers")] += 1
        self.ledger.changes["create rejected customer"] += 1
        return rec

    # edits

    async def edit(self, rec: Rec) -> None:
        if rec.busy or rec.deleted or rec.poison:
            return
        rec.busy = True
        try:
            if rec.conflict:
                await self._conflict(rec)
            else:
                values = self._values(rec.table, self._next())
                await self._write(rec, rec.home, values)
                rec.expected = values
        except Vanished:
            # Nobody deleted it, so tablesync did: the verifier reports it.
            rec.vanished = True
        finally:
            rec.busy = False

    async def _conflict(self, rec: Rec) -> None:
        if not await self._counterpart(rec):
            self.ledger.skipped_ops["conflict before the counterpart exists"] += 1
            return
        winner = conflict_winner(rec.table)
        loser = other_side(winner)
        loser_values = self._values(rec.table, self._next())
        winner_values = self._values(rec.table, self._next())
        await self._write(rec, loser, loser_values)
        await self._write(rec, winner, winner_values)
        rec.expected = winner_values
        self.ledger.conflicts[rec.table.mapping] += 1

    async def _write(self, rec: Rec, side: Side, values: dict[str, str]) -> None:
        table = rec.table
        await self.apis[side].update(
            table.entity_set(side), rec.ids[side], _body(table, side, values)
        )
        rec.written_at = time.monotonic()
        self.ledger.changes[f"update {side} {table.entity_set(side)}"] += 1

    # deletes

    async def delete(self, rec: Rec) -> None:
        if rec.busy or rec.deleted or rec.poison or rec.anchored:
            return
        rec.busy = True
        try:
            side: Side = rec.home
            if self.rng.random() < 0.5 and await self._counterpart(rec):
                side = other_side(rec.home)
            rec.deleted = True
            entity_set = rec.table.entity_set(side)
            outcome = await self.apis[side].delete(entity_set, rec.ids[side])
            if outcome == "deleted":
                self.ledger.deleted[(side, entity_set)] += 1
                self.ledger.changes[f"delete {side} {entity_set}"] += 1
            elif outcome == "ambiguous":
                self.ledger.ambiguous_deletes[(side, entity_set)] += 1
                self.ledger.changes[f"delete {side} {entity_set}"] += 1
            else:
                rec.vanished = True
        finally:
            rec.busy = False

    async def _counterpart(self, rec: Rec) -> bool:
        """Whether the record's coupled counterpart is known (looked up by marker)."""
        other = other_side(rec.home)
        if other in rec.ids:
            return True
        table = rec.table
        if not await self.is_coupled(table.mapping, rec.home, rec.ids[rec.home]):
            return False
        found = await self.apis[other].find(
            table.entity_set(other), table.marker.on(other), rec.marker
        )
        if len(found) == 1:
            rec.ids[other] = found[0][id_field(other, table.entity_set(other))]
            return True
        return False

    # late commits (made in the side's database, see late.py)

    def take_for_late(self, table: Table, side: Side, quiet_s: float) -> Rec | None:
        """A record made on ``side``, only ever changed there and not for
        ``quiet_s`` (a late change is still stamped after the one before it),
        held (busy) until ``release``; None if there is none to take now."""
        now = time.monotonic()
        candidates = [
            r
            for r in self.recs
            if r.table is table
            and r.home == side
            and side in r.ids
            and now - r.written_at >= quiet_s
            and not (r.conflict or r.busy or r.deleted or r.poison or r.vanished)
        ]
        if not candidates:
            return None
        rec = self.rng.choice(candidates)
        rec.busy = True
        return rec

    def new_values(self, table: Table) -> dict[str, str]:
        return self._values(table, self._next())

    def release(self, rec: Rec, written: dict[str, str] | None) -> None:
        """Ends a late commit; ``written``: the values it committed, None if it
        rolled back."""
        if written is not None:
            rec.expected = written
            rec.written_at = time.monotonic()
            self.ledger.changes[f"late update {rec.home} {rec.table.entity_set(rec.home)}"] += 1
        rec.busy = False

    # values

    def _values(self, table: Table, n: int) -> dict[str, str]:
        word = self.rng.choice(_WORDS)
        if table is CUSTOMER:
            return {
                "name": f"{word} Trading {n}",
                "city": f"{word}ton {n}",
                "phone": f"+1 555 {n:07d}",
                "email": f"office{n}@cust.example",
                "web": f"https://w{n}.example",
            }
        return {
            "name": f"{word} Person {n}",
            "phone": f"+44 20 {n:07d}",
            "mobile": f"+44 77 {n:07d}",
            "city": f"{word}ford {n}",
        }


def _body(table: Table, side: Side, values: dict[str, str]) -> dict[str, Any]:
    return {f.on(side): values[f.name] for f in table.editable}
