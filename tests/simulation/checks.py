"""The invariants of DESIGN.md, checked on the world a schedule left behind
once it has settled: what the sides hold against what the users did, and
tablesync's own state against both."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tablesync.core.events import Side
from tablesync.core.records import Row
from tablesync.core.stored import Selection
from tablesync.ports.state import StateStores
from tests.simulation.users import FIELDS, MARKER, TABLE, Truth, UserSide

__all__ = ["check"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
MAPPING = "CUSTOMER"


def _marker(s: Side, row: Row) -> str:
    value = row.fields.get(MARKER[s])
    return value.lower() if isinstance(value, str) else ""


async def check(
    truth: Truth,
    sides: dict[Side, UserSide],
    stores: StateStores,
    open_intents: Callable[[], Sequence[str]],
) -> list[str]:
    """Every violation found, as one line each (empty: all invariants hold)."""
    found: list[str] = []
    rows: dict[Side, dict[str, list[Row]]] = {s: {} for s in _SIDES}
    for s in _SIDES:
        for row in sides[s].rows(TABLE[s]):
            rows[s].setdefault(_marker(s, row), []).append(row)
    known = {m.lower() for m in truth.records}
    for s in _SIDES:
        for marker, group in rows[s].items():
            if marker not in known:
                found.append(f"unknown record on {s}: marker {marker!r} (made by nobody)")
            elif len(group) > 1:
                found.append(f"duplicate: {len(group)} records {marker} on {s}")  # invariant 3
    for record in truth.records.values():
        m = record.marker.lower()
        here = {s: rows[s].get(m, []) for s in _SIDES}
        if record.deleted:
            for s in _SIDES:
                if here[s]:
                    found.append(f"deleted {record.marker} still exists on {s}")
            continue
        if not (here["bc"] and here["dataverse"]):
            missing = [s for s in _SIDES if not here[s]]
            found.append(f"lost: {record.marker} never reached {', '.join(missing)}")
            continue
        bc, dv = here["bc"][0], here["dataverse"][0]
        coupling = (await stores.couplings.by_ids(MAPPING, "bc", [bc.id])).get(bc.id)
        if coupling is None or coupling.dv_id.lower() != dv.id.lower():
            found.append(f"{record.marker}: bc {bc.id} and dataverse {dv.id} are not coupled")
        for f, names in FIELDS.items():
            values = (bc.fields.get(names["bc"]), dv.fields.get(names["dataverse"]))
            if values[0] != values[1]:
                found.append(
                    f"{record.marker}.{f}: sides differ, bc {values[0]!r} dv {values[1]!r}"
                )
                continue
            if record.home is not None and values[0] != record.last[f]:
                # Invariant 9: only the home side's users edit this record.
                found.append(
                    f"lost edit: {record.marker}.{f} is {values[0]!r}, "
                    f"its last edit on {record.home} was {record.last[f]!r}"
                )
            elif values[0] not in record.written.get(f, set()):
                found.append(f"{record.marker}.{f} is {values[0]!r}, which no user wrote")
    left = open_intents()
    if left:
        found.append(f"intents left open: {', '.join(left[:5])}")
    problems = await stores.problems.records(Selection(everything=True))
    for p in problems:
        found.append(
            f"record not synced: {p.mapping} {p.source_side} {p.source_id} "
            f"{p.status} ({p.message[:80]})"
        )
    return found
