"""A PostgreSQL advisory lock held by one connection for as long as it lives."""

from __future__ import annotations

import asyncpg

__all__ = ["AdvisoryLock"]


class AdvisoryLock:
    """``Singleton`` on a session-level advisory lock: the hold ends with its
    connection, so a holder that dies frees it without anyone's help."""

    def __init__(self, dsn: str, key: int) -> None:
        self._dsn = dsn
        self._key = key
        self._conn: asyncpg.Connection | None = None

    async def try_hold(self) -> bool:
        if self._conn is not None and not self._conn.is_closed():
            return True
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
            self._conn = conn
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
