"""Couplings in memory, as ``adapters.postgres.couplings`` keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from tablesync.adapters.memory.database import (
    MemoryStore,
    Pair,
    StagedPairs,
    is_uuid,
    utc,
    utc_or_none,
    uuid_text,
)
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Direction, Side
from tablesync.core.fieldmap import LookupKey, normalise_key
from tablesync.core.stored import CouplingRow

__all__ = ["MemoryCouplings", "remove_pairs", "write_pairs"]


class MemoryCouplings(MemoryStore):
    async def by_ids(self, mapping: str, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        await self._pause("couplings.by_ids")
        return self._by_ids(mapping, side, ids)

    def _by_ids(self, mapping: str, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        if not ids:
            return {}
        wanted = [uuid_text(i) for i in ids]
        pairs = self._db.pairs(mapping)
        if pairs is None:
            return {}
        found: dict[str, Coupling] = {}
        for i in wanted:
            bc_id = i if side == "bc" else pairs.by_dv.get(i)
            pair = pairs.by_bc.get(bc_id) if bc_id is not None else None
            if pair is not None:
                found[i] = pair.coupling
        return found

    async def coupled_among(self, mapping: str, side: Side, ids: Sequence[str]) -> set[str]:
        await self._pause("couplings.coupled_among")
        if not ids:
            return set()
        wanted = [uuid_text(i) for i in ids]
        pairs = self._db.pairs(mapping)
        if pairs is None:
            return set()
        index = pairs.by_bc if side == "bc" else pairs.by_dv
        return {i for i in wanted if i in index}

    async def resolve(self, keys: Iterable[LookupKey]) -> dict[LookupKey, str]:
        await self._pause("couplings.resolve")
        found: dict[LookupKey, str] = {}
        for k in keys:
            pairs = self._db.pairs(k.target)
            if pairs is None:
                continue
            if k.side == "bc":
                # A key shared by two couplings answers with one of them, as
                # the SQL's unordered rows do.
                holders = [
                    h
                    for h in pairs.by_key.get(k.value, ())
                    if pairs.by_bc[h].coupling.company == k.company
                ]
                if holders:
                    found[k] = pairs.by_bc[holders[-1]].coupling.dv_id
            elif is_uuid(k.value):
                dv_id = uuid_text(k.value)
                bc_id = pairs.by_dv.get(dv_id)
                if bc_id is not None:
                    coupling = pairs.by_bc[bc_id].coupling
                    if coupling.bc_key is not None and coupling.company == k.company:
                        found[LookupKey(k.target, "dataverse", dv_id, k.company)] = coupling.bc_key
        return found

    async def all_ids(
        self, mapping: str, side: Side, *, coupled_before: datetime, company: str | None = None
    ) -> set[str]:
        await self._pause("couplings.all_ids")
        pairs = self._db.pairs(mapping)
        if pairs is None:
            return set()
        before = utc(coupled_before)
        return {
            p.coupling.id_on(side)
            for p in pairs.by_bc.values()
            if p.coupled_at < before
            and not (p.coupling.bc_deleted if side == "bc" else p.coupling.dv_deleted)
            and (company is None or p.coupling.company == company)
        }

    async def listing(
        self,
        mapping: str | None = None,
        *,
        search: str | None = None,
        limit: int = 100,
        company: str | None = None,
    ) -> list[CouplingRow]:
        await self._pause("couplings.listing")
        lowered = search.lower() if search is not None else None
        uppered = search.upper() if search is not None else None
        rows = [
            p
            for name, pairs in self._db.t.couplings.items()
            if mapping is None or name == mapping
            for p in pairs.by_bc.values()
            if (company is None or p.coupling.company == company)
            and (
                search is None
                or lowered in (p.coupling.bc_id, p.coupling.dv_id)
                or p.coupling.bc_key == uppered
            )
        ]
        rows.sort(key=lambda p: p.coupled_at, reverse=True)
        rows.sort(key=lambda p: p.coupling.mapping)
        return [
            CouplingRow(p.coupling, p.coupled_at, p.last_synced_at, p.coupling.last_direction)
            for p in rows[: max(limit, 0)]
        ]

    async def of_mapping(self, mapping: str) -> list[Coupling]:
        await self._pause("couplings.of_mapping")
        pairs = self._db.pairs(mapping)
        return [] if pairs is None else [p.coupling for p in pairs.by_bc.values()]

    async def count(self, mapping: str | None = None) -> int:
        await self._pause("couplings.count")
        if mapping is not None:
            pairs = self._db.pairs(mapping)
            return 0 if pairs is None else len(pairs.by_bc)
        return sum(len(p.by_bc) for p in self._db.t.couplings.values())

    async def get(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        await self._pause("couplings.get")
        return self._by_ids(mapping, side, [record_id]).get(record_id.lower())

    async def couple(self, c: Coupling, direction: str | None) -> None:
        await self._pause("couplings.couple")
        staged = StagedPairs(self._db.t.couplings)
        write_pairs(staged, [(c, direction)], self._db.now())
        staged.apply()

    async def uncouple(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        await self._pause("couplings.uncouple")
        wanted = uuid_text(record_id)
        pairs = self._db.pairs(mapping)
        if pairs is None:
            return None
        bc_id = wanted if side == "bc" else pairs.by_dv.get(wanted)
        pair = pairs.by_bc.get(bc_id) if bc_id is not None else None
        if pair is None:
            return None
        pairs.remove(pair.coupling.bc_id)
        return pair.coupling


def write_pairs(
    staged: StagedPairs, couplings: Sequence[tuple[Coupling, str | None]], now: datetime
) -> None:
    """Inserts or replaces couplings, each with the direction of its write, as
    ``postgres.couplings.write_couplings``: first every other row holding one
    of their Dataverse rows goes, then each is inserted, or updated keeping its
    ``coupled_at``; one with no BC key or direction keeps those its BC record's
    coupling had before this call."""
    rows = [
        (
            c,
            direction,
            uuid_text(c.bc_id),
            uuid_text(c.dv_id),
            normalise_key("bc", c.bc_key) if c.bc_key else None,
        )
        for c, direction in couplings
    ]
    before = {
        (c.mapping, bc_id): old.coupling
        for c, _, bc_id, _, _ in rows
        if (old := staged.get(c.mapping, bc_id)) is not None
    }
    for c, _, bc_id, dv_id, _ in rows:
        holder = staged.bc_of(c.mapping, dv_id)
        if holder is not None and holder != bc_id:
            staged.drop(c.mapping, holder)
    for c, direction, bc_id, dv_id, bc_key in rows:
        old = staged.get(c.mapping, bc_id)
        was = before.get((c.mapping, bc_id))
        kept_key = bc_key if bc_key is not None or was is None else was.bc_key
        last = direction if direction is not None or was is None else was.last_direction
        stored = Coupling(
            mapping=c.mapping,
            bc_id=bc_id,
            dv_id=dv_id,
            bc_key=kept_key,
            bc_stamp=Stamp(utc_or_none(c.bc_stamp.modified_at), c.bc_stamp.etag),
            dv_stamp=Stamp(utc_or_none(c.dv_stamp.modified_at), c.dv_stamp.etag),
            bc_deleted=c.bc_deleted,
            dv_deleted=c.dv_deleted,
            last_direction=cast(Direction | None, last),
            company=c.company,
        )
        staged.put(Pair(stored, old.coupled_at if old is not None else now, now))


def remove_pairs(staged: StagedPairs, couplings: Sequence[Coupling]) -> set[tuple[str, str]]:
    """Removes the couplings of these BC records; returns (mapping, bc_id) of
    those this call removed."""
    removed: set[tuple[str, str]] = set()
    for c in couplings:
        bc_id = uuid_text(c.bc_id)
        if staged.drop(c.mapping, bc_id) is not None:
            removed.add((c.mapping, bc_id))
    return removed
