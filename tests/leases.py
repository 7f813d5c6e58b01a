"""What the lease tests share: a holder's way to the database that can be
cut, and the shifts the holders worked, which must never overlap."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tablesync.ports.state import Singleton

__all__ = ["Cuttable", "Shift", "never_together", "now", "working"]


def now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class Shift:
    holder: str
    began: float
    ended: float | None = None


class Cuttable:
    """A holder's way to the database that can be cut: once cut, every call
    hangs, as one on a connection whose peer is gone does."""

    def __init__(self, inner: Singleton) -> None:
        self.inner = inner
        self.cut = False
        self.renewed: list[float] = []

    @property
    def ttl_s(self) -> float:
        return self.inner.ttl_s

    async def _hang_if_cut(self) -> None:
        if self.cut:
            await asyncio.Event().wait()

    async def try_hold(self) -> int | None:
        asked = now()
        await self._hang_if_cut()
        epoch = await self.inner.try_hold()
        if epoch is not None:
            self.renewed.append(asked)
        return epoch

    async def release(self) -> None:
        await self._hang_if_cut()
        await self.inner.release()


def working(name: str, shifts: list[Shift]) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def work(stop: asyncio.Event) -> None:
        shift = Shift(name, now())
        shifts.append(shift)
        try:
            await stop.wait()
        finally:
            shift.ended = now()

    return work


def never_together(shifts: list[Shift]) -> None:
    ordered = sorted(shifts, key=lambda s: s.began)
    for before, after in itertools.pairwise(ordered):
        assert before.ended is not None and before.ended <= after.began, (before, after)
