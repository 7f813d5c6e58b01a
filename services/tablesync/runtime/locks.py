"""Locks by key, for work of one process that runs side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

__all__ = ["KeyedLocks"]

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    """Holds sets of keys. A set is taken whole, in one order shared by every
    holder, so two holders waiting on each other's keys cannot both wait."""

    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        # Holders and waiters of each key: a lock nobody uses is forgotten.
        self._users: dict[K, int] = {}

    async def acquire(self, keys: Collection[K]) -> None:
        """Takes every key of ``keys``; on failure (a cancellation) none."""
        taken: list[K] = []
        try:
            for key in sorted(set(keys), key=repr):
                lock = self._locks.setdefault(key, asyncio.Lock())
                self._users[key] = self._users.get(key, 0) + 1
                try:
                    await lock.acquire()
                except BaseException:
                    self._leave(key)
                    raise
                taken.append(key)
        except BaseException:
            self.release(taken)
            raise

    def release(self, keys: Collection[K]) -> None:
        """Gives back keys this holder took."""
        for key in set(keys):
            self._locks[key].release()
            self._leave(key)

    def held(self) -> int:
        return sum(lock.locked() for lock in self._locks.values())

    def _leave(self, key: K) -> None:
        self._users[key] -= 1
        if self._users[key] == 0:
            del self._users[key]
            del self._locks[key]
