"""One holder at a time, in memory: the counterpart of ``postgres.AdvisoryLock``."""

from __future__ import annotations

from tablesync.adapters.memory.database import MemoryDatabase, MemoryStore

__all__ = ["MemorySingleton"]


class MemorySingleton(MemoryStore):
    """``Singleton`` on one key of a ``MemoryDatabase``: holders of one key on
    one database exclude each other, as advisory locks of one key on one
    PostgreSQL database do. A holder that dies is simulated by ``release``
    (its connection closing frees an advisory lock the same way)."""

    def __init__(self, database: MemoryDatabase, key: int = 0) -> None:
        super().__init__(database)
        self._key = key

    async def try_hold(self) -> bool:
        await self._pause("singleton.try_hold")
        holder = self._db.holders.setdefault(self._key, self)
        return holder is self

    async def release(self) -> None:
        await self._pause("singleton.release")
        if self._db.holders.get(self._key) is self:
            del self._db.holders[self._key]
