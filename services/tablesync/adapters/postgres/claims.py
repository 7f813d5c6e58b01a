"""``PairClaims`` on session-level advisory locks of one connection per instance.

A claim is one advisory lock per record, on a connection of the instance's own
(not the pool's, which every step shares): a holder that dies, or whose
connection is cut, frees its records with it. ``take`` locks in ascending key
order in one statement under ``lock_timeout``, so waiters never deadlock and a
long wait ends as ``ClaimsBusy``; ``extend`` only tries. A commit checks the
claim in its own transaction (``claim_held``): the holder's session must still
be there and hold as many advisory locks as the claim has records."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import asyncpg
import structlog

from tablesync.adapters.transient import TRANSIENT
from tablesync.errors import ClaimsBusy
from tablesync.ports.claims import ClaimProof, PairClaim, PairKey

__all__ = ["PostgresPairClaims", "claim_held", "lock_key"]

log = structlog.get_logger()


def lock_key(mapping: str, key: PairKey) -> int:
    """The advisory lock of one record of a mapping: a signed 64-bit hash. Two
    records sharing one (about one pair in 2^64) only wait for each other."""
    side, record_id = key
    digest = hashlib.blake2b(
        f"tablesync.pair\0{mapping}\0{side}\0{record_id.lower()}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


_LOCK_ALL = """
SELECT count(pg_advisory_lock(k))
FROM (SELECT DISTINCT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS ordered
"""

_TRY_ALL = """
SELECT coalesce(array_agg(k) FILTER (WHERE got), '{}'), bool_and(got)
FROM (SELECT k, pg_try_advisory_lock(k) AS got
      FROM (SELECT DISTINCT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS ordered) AS tried
"""


async def claim_held(conn: asyncpg.Connection, proof: ClaimProof) -> bool:
    """Whether the session ``proof`` names still holds its records' locks."""
    held = await conn.fetchval(
        "SELECT count(*) FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND pid = $1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        int(proof.holder),
    )
    return int(held or 0) >= proof.records


class _Claim:
    def __init__(
        self,
        owner: PostgresPairClaims,
        conn: asyncpg.Connection,
        mapping: str,
        keys: frozenset[PairKey],
    ) -> None:
        self._owner = owner
        self._conn = conn
        self._pid = int(conn.get_server_pid())
        self._mapping = mapping
        self._keys = keys
        self._locks = {lock_key(mapping, k) for k in keys}

    @property
    def keys(self) -> frozenset[PairKey]:
        return self._keys

    def proof(self) -> ClaimProof:
        return ClaimProof(str(self._pid), len(self._locks))

    async def extend(self, keys: Collection[PairKey]) -> bool:
        new = {k for k in keys if k not in self._keys}
        locks = {lock_key(self._mapping, k) for k in new} - self._locks
        if locks:
            conn = self._conn
            if conn.is_closed():
                return False  # lost with its connection: the batch starts over
            got, all_got = await conn.fetchrow(_TRY_ALL, sorted(locks))
            if not all_got:
                await conn.execute(
                    "SELECT count(pg_advisory_unlock(k)) FROM unnest($1::bigint[]) AS k", list(got)
                )
                return False
            self._locks |= locks
        self._keys = self._keys | new
        return True

    async def release(self) -> None:
        await self._owner.release_all()


class PostgresPairClaims:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    @property
    def pid(self) -> int:
        assert self._conn is not None
        return int(self._conn.get_server_pid())

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def take(self, mapping: str, keys: Collection[PairKey], *, wait_s: float) -> PairClaim:
        conn = await self.connection()
        claim = _Claim(self, conn, mapping, frozenset(keys))
        try:
            await conn.execute(f"SET lock_timeout = {max(1, round(wait_s * 1000))}")
            await conn.fetchval(_LOCK_ALL, sorted(claim._locks))
        except asyncpg.exceptions.LockNotAvailableError:
            await self.release_all()
            raise ClaimsBusy(mapping, len(claim.keys), wait_s) from None
        except BaseException:
            # Cut short half-way (a cancellation, a lost connection): the
            # connection goes, and every lock it took with it.
            self._drop()
            raise
        return claim

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def release_all(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            # Freed with the connection, which goes too.
            log.info("claims_connection_lost", error=f"{type(exc).__name__}: {exc}")
            self._drop()
        except BaseException:
            self._drop()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if not conn.is_closed():
                await conn.close()
