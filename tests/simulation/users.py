"""What the simulated users do, and what they did: the truth the checks hold
the sides to.

A schedule's users create customers on either side, edit them, and delete
some. Most records have a *home* side: only users of that side edit them,
so their last edit must win whatever crashes, replays and races happen in
between (invariant 9). The others are *contested*: edited on both sides, so
a conflict policy may pick either side; their values must still be values
some user wrote."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tablesync.core.events import Side
from tablesync.core.records import Row
from tests.simulation.sim import Actor, Sim

__all__ = ["FIELDS", "Ledger", "Record", "Truth", "UserSide", "run_users"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
TABLE = {"bc": "customers", "dataverse": "accounts"}
MARKER = {"bc": "number", "dataverse": "accountnumber"}
FIELDS: dict[str, dict[Side, str]] = {
    "name": {"bc": "displayName", "dataverse": "name"},
    "city": {"bc": "city", "dataverse": "address1_city"},
    "phone": {"bc": "phoneNumber", "dataverse": "telephone1"},
}
_CITIES = ("Oslo", "Lyon", "Graz", "Turku", "Porto", "Gent")


class UserSide(Protocol):
    """What a user does on a side: through its UI, not tablesync's API."""

    def user_create(self, entity_set: str, values: dict[str, Any]) -> Row: ...

    def user_update(self, entity_set: str, record_id: str, values: dict[str, Any]) -> Row: ...

    def user_delete(self, entity_set: str, record_id: str) -> None: ...

    def rows(self, entity_set: str) -> Sequence[Row]: ...


@dataclass
class Record:
    marker: str
    created_on: Side
    home: Side | None
    last: dict[str, str] = field(default_factory=dict)
    written: dict[str, set[str]] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class Ledger:
    """How many rows each side held before the users began, and how many
    they created and deleted there: what the job counters add up with.
    A user's call on a memory side cannot fail half-way, so no delete of
    theirs is unclear (as one can be in the fault suite)."""

    before: Counter[Side] = field(default_factory=Counter)
    created: Counter[Side] = field(default_factory=Counter)
    deleted: Counter[Side] = field(default_factory=Counter)


@dataclass
class Truth:
    records: dict[str, Record] = field(default_factory=dict)
    actions: int = 0
    ledger: Ledger = field(default_factory=Ledger)


def find(side: UserSide, s: Side, marker: str) -> Row | None:
    for row in side.rows(TABLE[s]):
        value = row.fields.get(MARKER[s])
        if isinstance(value, str) and value.lower() == marker.lower():
            return row
    return None


def _create_values(s: Side, marker: str, values: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {MARKER[s]: marker}
    out.update({FIELDS[f][s]: v for f, v in values.items()})
    if s == "dataverse":
        out.update({"statecode": 0, "customertypecode": 3})
    else:
        out["blocked"] = " "
    return out


async def run_users(
    sim: Sim,
    sides: dict[Side, UserSide],
    truth: Truth,
    *,
    records: int,
    actions: int,
    span_s: float,
) -> None:
    """Creates ``records`` customers, then performs ``actions`` edits and
    deletions at random moments within ``span_s`` virtual seconds."""
    rng = sim.rng
    user = Actor("users", "users")
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def body() -> None:
        for side in _SIDES:
            truth.ledger.before[side] = len(sides[side].rows(TABLE[side]))
        for n in range(records):
            s: Side = rng.choice(_SIDES)
            marker = f"S{sim.seed % 100000:05d}-{n}"
            home: Side | None = rng.choice((s, s, s, "bc", "dataverse", None))
            values = {"name": f"{marker} v0", "city": rng.choice(_CITIES), "phone": "0"}
            record = Record(marker, s, home)
            for f, v in values.items():
                record.last[f] = v
                record.written[f] = {v}
            truth.records[marker] = record
            sides[s].user_create(TABLE[s], _create_values(s, marker, values))
            truth.ledger.created[s] += 1
            sim.note("users", f"create {marker} on {s}")
        for _ in range(actions):
            await asyncio.sleep(rng.uniform(0, span_s / max(actions, 1)) * 2)
            if loop.time() - start > span_s:
                break
            live = [r for r in truth.records.values() if not r.deleted]
            if not live:
                break
            record = rng.choice(live)
            s = record.home or rng.choice(_SIDES)
            row = find(sides[s], s, record.marker)
            if row is None:
                continue  # not synced to that side yet: the user finds nothing to edit
            truth.actions += 1
            if rng.random() < 0.06:
                record.deleted = True
                sides[s].user_delete(TABLE[s], row.id)
                truth.ledger.deleted[s] += 1
                sim.note("users", f"delete {record.marker} on {s}")
                continue
            f = rng.choice(tuple(FIELDS))
            value = (
                f"{record.marker} v{truth.actions}"
                if f == "name"
                else rng.choice(_CITIES)
                if f == "city"
                else str(truth.actions)
            )
            record.last[f] = value
            record.written.setdefault(f, set()).add(value)
            sides[s].user_update(TABLE[s], row.id, {FIELDS[f][s]: value})
            sim.note("users", f"edit {record.marker} {f}={value!r} on {s}")

    await sim.run_as(user, body)
