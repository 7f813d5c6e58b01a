"""Claims on the records of coupled pairs, across every apply instance of a mapping.

The two records of a coupling are events on two topics, so their partitions can
belong to two apply instances. Each reads the coupling and both records, decides,
writes and commits; without a claim one can decide on state the other is about
to change, and a user's edit is lost between them. A batch claims every record
it decides about, and their counterparts, before it reads anything, and holds
the claim until its effects are committed: the other instance decides after that
commit, on what it left.

- ``take`` claims a set of records at once, waiting while another holder has
  any of them (``errors.ClaimsBusy`` after ``wait_s``, nothing taken); takes are
  ordered the same way by every holder, so two of them never wait on each other.
- ``PairClaim.extend`` adds records to a claim without waiting: False, nothing
  added, when another holder has one; the batch then starts over (a holder that
  waited while holding could deadlock).
- A holder that dies frees its claims (the claim lives on a connection of its
  own); ``ApplyState.commit`` with ``ClaimProof`` commits only while the claim is
  still held (``errors.ClaimLost`` otherwise), so an instance whose claim was cut
  never commits over one that took the records since.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from tablesync.core.events import Side

__all__ = ["ClaimProof", "PairClaim", "PairClaims", "PairKey"]

PairKey = tuple[Side, str]
"""A record: its side and lower-case id."""


@dataclass(frozen=True, slots=True)
class ClaimProof:
    """What a commit checks: the holder (a database session) and how many
    records it claims."""

    holder: str
    records: int


class PairClaim(Protocol):
    """Records held by one holder until ``release``."""

    @property
    def keys(self) -> frozenset[PairKey]: ...

    def proof(self) -> ClaimProof: ...

    async def extend(self, keys: Collection[PairKey]) -> bool:
        """Adds ``keys`` if no other holder has any of them (True), else none."""
        ...

    async def release(self) -> None:
        """Frees every record of the claim; never raises (a lost connection has
        freed them already)."""
        ...


class PairClaims(Protocol):
    """Claims of one apply instance (one database session at a time)."""

    async def take(self, mapping: str, keys: Collection[PairKey], *, wait_s: float) -> PairClaim:
        """Claims ``keys`` of ``mapping`` once no other holder has any; raises
        ``errors.ClaimsBusy`` when that takes longer than ``wait_s``."""
        ...

    async def close(self) -> None: ...
