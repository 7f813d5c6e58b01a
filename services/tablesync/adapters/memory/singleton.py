"""Leases in memory: the counterpart of ``postgres.PostgresLease``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from tablesync.adapters.memory.database import MemoryDatabase, MemoryStore

__all__ = ["MemorySingleton"]

DEFAULT_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class _Lease:
    holder: str
    epoch: int
    expires_at: datetime


class MemorySingleton(MemoryStore):
    """``Singleton`` on one name of a ``MemoryDatabase``, its expiry read on
    the database's clock as PostgreSQL's ``now()`` is. A holder that dies
    simply stops calling: its hold ends ``ttl_s`` after its last renewal."""

    def __init__(
        self, database: MemoryDatabase, name: str = "singleton", *, ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        super().__init__(database)
        self._name = name
        self._ttl = timedelta(seconds=ttl_s)
        self._holder = str(uuid.uuid4())

    @property
    def ttl_s(self) -> float:
        return self._ttl.total_seconds()

    async def try_hold(self) -> int | None:
        await self._pause("singleton.try_hold")
        now = self._db.now()
        lease: _Lease | None = self._db.holders.get(self._name)
        if lease is not None and lease.expires_at > now and lease.holder != self._holder:
            return None
        if lease is not None and lease.expires_at > now:
            epoch = lease.epoch  # this holder's, renewed
        else:
            epoch = (lease.epoch if lease is not None else 0) + 1
        self._db.holders[self._name] = _Lease(self._holder, epoch, now + self._ttl)
        return epoch

    async def release(self) -> None:
        await self._pause("singleton.release")
        now = self._db.now()
        lease: _Lease | None = self._db.holders.get(self._name)
        if lease is not None and lease.holder == self._holder and lease.expires_at > now:
            self._db.holders[self._name] = _Lease(lease.holder, lease.epoch, now)
