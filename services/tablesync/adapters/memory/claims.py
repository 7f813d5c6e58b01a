"""``PairClaims`` in memory: the counterpart of ``postgres.PostgresPairClaims``.

Claims of one ``MemoryDatabase`` exclude each other as advisory locks of one
PostgreSQL database do. One ``MemoryPairClaims`` is one holder (one instance's
connection); ``drop`` is what its connection closing does when the process dies.
Waits run on the event loop's clock, so a simulation's virtual time bounds them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection

from tablesync.adapters.memory.database import MemoryDatabase, MemoryStore
from tablesync.errors import ClaimsBusy
from tablesync.ports.claims import ClaimProof, PairClaim, PairKey

__all__ = ["MemoryPairClaims", "claim_held"]

_HOLDERS = itertools.count(1)


def claim_held(database: MemoryDatabase, proof: ClaimProof) -> bool:
    """Whether the holder ``proof`` names still holds its records."""
    held = sum(1 for holder in database.claims.values() if _name(holder) == proof.holder)
    return held >= proof.records


def _name(holder: object) -> str | None:
    return holder.name if isinstance(holder, MemoryPairClaims) else None


class _Claim:
    def __init__(self, owner: MemoryPairClaims, mapping: str, keys: frozenset[PairKey]) -> None:
        self._owner = owner
        self._mapping = mapping
        self._keys = keys

    @property
    def keys(self) -> frozenset[PairKey]:
        return self._keys

    def proof(self) -> ClaimProof:
        return ClaimProof(self._owner.name, len(self._keys))

    async def extend(self, keys: Collection[PairKey]) -> bool:
        await self._owner.pause("claims.extend")
        new = frozenset(keys) - self._keys
        if not self._owner.free(self._mapping, new):
            return False
        self._owner.hold(self._mapping, new)
        self._keys |= new
        return True

    async def release(self) -> None:
        self._owner.drop()


class MemoryPairClaims(MemoryStore):
    def __init__(self, database: MemoryDatabase) -> None:
        super().__init__(database)
        self.name = f"memory-claims-{next(_HOLDERS)}"

    async def pause(self, what: str) -> None:
        await self._pause(what)

    def free(self, mapping: str, keys: Collection[PairKey]) -> bool:
        claims = self._db.claims
        return all(claims.get((mapping, *k), self) is self for k in keys)

    def hold(self, mapping: str, keys: Collection[PairKey]) -> None:
        for side, rid in keys:
            self._db.claims[(mapping, side, rid)] = self

    async def take(self, mapping: str, keys: Collection[PairKey], *, wait_s: float) -> PairClaim:
        await self._pause("claims.take")
        wanted = frozenset(keys)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self.free(mapping, wanted):
            left = deadline - loop.time()
            if left <= 0:
                raise ClaimsBusy(mapping, len(wanted), wait_s)
            # Polled: whoever holds them may die without a word (``drop`` from
            # outside), and a poll on the loop's clock costs a simulation nothing.
            await asyncio.sleep(min(left, 0.05))
        self.hold(mapping, wanted)
        return _Claim(self, mapping, wanted)

    def drop(self) -> None:
        """Frees every record this holder claims (its connection closed)."""
        claims = self._db.claims
        for key in [k for k, holder in claims.items() if holder is self]:
            del claims[key]

    async def close(self) -> None:
        self.drop()
