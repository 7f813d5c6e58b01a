"""Leases of the singletons in PostgreSQL: one row per name, renewed by its holder."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import asyncpg

__all__ = ["PostgresLease"]

# A statement of the lease that takes longer is given up: its holder must
# learn in time that it could not renew.
_STATEMENT_TIMEOUT_S = 5.0

_TRY_HOLD = """
INSERT INTO singleton_leases AS l
    (name, holder, holder_label, epoch, taken_at, renewed_at, expires_at)
VALUES ($1, $2, $3, 1, now(), now(), now() + make_interval(secs => $4))
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    holder_label = EXCLUDED.holder_label,
    epoch = CASE WHEN l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
    taken_at = CASE WHEN l.expires_at > now() THEN l.taken_at ELSE now() END,
    renewed_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
RETURNING epoch
"""

_RELEASE = """
UPDATE singleton_leases SET expires_at = now()
WHERE name = $1 AND holder = $2 AND expires_at > now()
"""


def _label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresLease:
    """``Singleton`` on a row of ``singleton_leases``, through a connection of
    its own: a busy pool never keeps a holder from renewing in time, and the
    connection is made again after the database dropped it (a restart)."""

    def __init__(self, dsn: str, name: str, *, ttl_s: float) -> None:
        self._dsn = dsn
        self._name = name
        self._ttl_s = ttl_s
        self._holder = str(uuid.uuid4())
        self._conn: asyncpg.Connection | None = None

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def try_hold(self) -> int | None:
        epoch: int | None = await self._fetchval(
            _TRY_HOLD, self._name, self._holder, _label(), self._ttl_s
        )
        return epoch

    async def release(self) -> None:
        await self._fetchval(_RELEASE, self._name, self._holder)
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _fetchval(self, sql: str, *args: object) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=_STATEMENT_TIMEOUT_S,
                command_timeout=_STATEMENT_TIMEOUT_S,
                server_settings={"application_name": f"tablesync lease {self._name}"},
            )
        conn = self._conn
        try:
            return await conn.fetchval(sql, *args)
        except BaseException:
            # Whatever cut the statement short (the server gone, a timeout, a
            # cancel) may have left the connection half-way: the next call
            # opens a new one.
            self._conn = None
            conn.terminate()
            raise
