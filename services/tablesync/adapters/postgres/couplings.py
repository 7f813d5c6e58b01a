"""Couplings in PostgreSQL: read per batch, written inside apply's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import Side
from tablesync.core.fieldmap import LookupKey, normalise_key
from tablesync.core.stored import CouplingRow

__all__ = ["CouplingRow", "CouplingStore", "coupling_from_record"]

_COLUMNS = (
    "mapping, bc_id::text AS bc_id, dv_id::text AS dv_id, bc_key, bc_modified_at, bc_etag,"
    " dv_modified_at, dv_etag, bc_deleted, dv_deleted, last_direction, company"
)


def coupling_from_record(r: asyncpg.Record) -> Coupling:
    return Coupling(
        mapping=r["mapping"],
        bc_id=r["bc_id"],
        dv_id=r["dv_id"],
        bc_key=r["bc_key"],
        bc_stamp=Stamp(r["bc_modified_at"], r["bc_etag"]),
        dv_stamp=Stamp(r["dv_modified_at"], r["dv_etag"]),
        bc_deleted=r["bc_deleted"],
        dv_deleted=r["dv_deleted"],
        last_direction=r["last_direction"],
        company=r["company"],
    )


def _id_column(side: Side) -> str:
    return "bc_id" if side == "bc" else "dv_id"


class CouplingStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def by_ids(self, mapping: str, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        """The couplings of these records of ``side``, by that side's id."""
        if not ids:
            return {}
        column = _id_column(side)
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM couplings WHERE mapping = $1 AND {column} = ANY($2::uuid[])",
            mapping,
            [UUID(i) for i in ids],
        )
        return {r[column]: coupling_from_record(r) for r in rows}

    async def coupled_among(self, mapping: str, side: Side, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        column = _id_column(side)
        rows = await self._pool.fetch(
            f"SELECT {column}::text AS id FROM couplings "
            f"WHERE mapping = $1 AND {column} = ANY($2::uuid[])",
            mapping,
            [UUID(i) for i in ids],
        )
        return {r["id"] for r in rows}

    async def resolve(self, keys: Iterable[LookupKey]) -> dict[LookupKey, str]:
        """Lookups through couplings: BC natural key -> Dataverse id, Dataverse id -> BC key."""
        by_bc: dict[tuple[str, str], list[str]] = {}
        by_dv: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            into = by_bc if k.side == "bc" else by_dv
            into.setdefault((k.target, k.company), []).append(k.value)
        found: dict[LookupKey, str] = {}
        async with self._pool.acquire() as conn:
            for (target, company), values in by_bc.items():
                rows = await conn.fetch(
                    "SELECT bc_key, dv_id::text AS dv_id FROM couplings "
                    "WHERE mapping = $1 AND company = $3 AND bc_key = ANY($2::text[])",
                    target,
                    values,
                    company,
                )
                for r in rows:
                    found[LookupKey(target, "bc", r["bc_key"], company)] = r["dv_id"]
            for (target, company), values in by_dv.items():
                valid = [v for v in values if _is_uuid(v)]
                rows = await conn.fetch(
                    "SELECT dv_id::text AS dv_id, bc_key FROM couplings "
                    "WHERE mapping = $1 AND company = $3 AND dv_id = ANY($2::uuid[]) "
                    "AND bc_key IS NOT NULL",
                    target,
                    [UUID(v) for v in valid],
                    company,
                )
                for r in rows:
                    found[LookupKey(target, "dataverse", r["dv_id"], company)] = r["bc_key"]
        return found

    async def all_ids(
        self, mapping: str, side: Side, *, coupled_before: datetime, company: str | None = None
    ) -> set[str]:
        """Ids on ``side`` of couplings made before ``coupled_before``, not flagged deleted."""
        column = _id_column(side)
        flag = "bc_deleted" if side == "bc" else "dv_deleted"
        rows = await self._pool.fetch(
            f"SELECT {column}::text AS id FROM couplings "
            f"WHERE mapping = $1 AND coupled_at < $2 AND NOT {flag} "
            "AND ($3::text IS NULL OR company = $3)",
            mapping,
            coupled_before,
            company,
        )
        return {r["id"] for r in rows}

    async def listing(
        self,
        mapping: str | None = None,
        *,
        search: str | None = None,
        limit: int = 100,
        company: str | None = None,
    ) -> list[CouplingRow]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS}, coupled_at, last_synced_at FROM couplings "
            "WHERE ($1::text IS NULL OR mapping = $1) AND ($2::text IS NULL "
            "OR bc_id::text = lower($2) OR dv_id::text = lower($2) OR bc_key = upper($2)) "
            "AND ($4::text IS NULL OR company = $4) "
            "ORDER BY mapping, coupled_at DESC LIMIT $3",
            mapping,
            search,
            limit,
            company,
        )
        return [
            CouplingRow(
                coupling_from_record(r), r["coupled_at"], r["last_synced_at"], r["last_direction"]
            )
            for r in rows
        ]

    async def of_mapping(self, mapping: str) -> list[Coupling]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM couplings WHERE mapping = $1", mapping
        )
        return [coupling_from_record(r) for r in rows]

    async def count(self, mapping: str | None = None) -> int:
        value = await self._pool.fetchval(
            "SELECT count(*) FROM couplings WHERE $1::text IS NULL OR mapping = $1", mapping
        )
        return int(value)

    async def get(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        return (await self.by_ids(mapping, side, [record_id])).get(record_id.lower())

    async def couple(self, c: Coupling, direction: str | None) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await write_couplings(conn, [(c, direction)])

    async def uncouple(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        column = _id_column(side)
        row = await self._pool.fetchrow(
            f"DELETE FROM couplings WHERE mapping = $1 AND {column} = $2::uuid "
            f"RETURNING {_COLUMNS}",
            mapping,
            UUID(record_id),
        )
        return coupling_from_record(row) if row else None


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


async def write_couplings(
    conn: asyncpg.Connection, couplings: Sequence[tuple[Coupling, str | None]]
) -> None:
    """Inserts or replaces couplings, each with the direction of its write; a
    record coupled elsewhere before is re-coupled. A coupling with no BC key
    or no direction keeps those its BC record's coupling had before this call,
    also when another coupling of the call replaces that row (the record's
    number is the record's, whichever Dataverse row it is coupled to): so the
    result does not depend on the order of the couplings."""
    if not couplings:
        return
    earlier = {
        (r["mapping"], r["bc_id"]): (r["bc_key"], r["last_direction"])
        for r in await conn.fetch(
            "SELECT c.mapping, c.bc_id, c.bc_key, c.last_direction FROM couplings c "
            "JOIN unnest($1::text[], $2::uuid[]) AS w(mapping, bc_id) "
            "ON c.mapping = w.mapping AND c.bc_id = w.bc_id",
            [c.mapping for c, _ in couplings],
            [UUID(c.bc_id) for c, _ in couplings],
        )
    }
    rows = []
    for c, direction in couplings:
        bc_id = UUID(c.bc_id)
        key, last = earlier.get((c.mapping, bc_id), (None, None))
        rows.append(
            (
                c.mapping,
                bc_id,
                UUID(c.dv_id),
                normalise_key("bc", c.bc_key) if c.bc_key else key,
                c.bc_stamp.modified_at,
                c.bc_stamp.etag,
                c.dv_stamp.modified_at,
                c.dv_stamp.etag,
                c.bc_deleted,
                c.dv_deleted,
                direction if direction is not None else last,
                c.company,
            )
        )
    # A Dataverse row can be coupled to only one BC record per mapping: a new
    # coupling of the same row replaces the old one rather than failing.
    await conn.executemany(
        "DELETE FROM couplings WHERE mapping = $1 AND dv_id = $2 AND bc_id <> $3",
        [(r[0], r[2], r[1]) for r in rows],
    )
    await conn.executemany(
        """
        INSERT INTO couplings (mapping, bc_id, dv_id, bc_key, bc_modified_at, bc_etag,
                               dv_modified_at, dv_etag, bc_deleted, dv_deleted, last_direction,
                               company)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (mapping, bc_id) DO UPDATE SET
            company = EXCLUDED.company,
            dv_id = EXCLUDED.dv_id,
            bc_key = coalesce(EXCLUDED.bc_key, couplings.bc_key),
            bc_modified_at = EXCLUDED.bc_modified_at,
            bc_etag = EXCLUDED.bc_etag,
            dv_modified_at = EXCLUDED.dv_modified_at,
            dv_etag = EXCLUDED.dv_etag,
            bc_deleted = EXCLUDED.bc_deleted,
            dv_deleted = EXCLUDED.dv_deleted,
            last_direction = coalesce(EXCLUDED.last_direction, couplings.last_direction),
            last_synced_at = now()
        """,
        rows,
    )


async def delete_couplings(
    conn: asyncpg.Connection, couplings: Sequence[Coupling]
) -> set[tuple[str, str]]:
    """Removes the couplings; returns (mapping, bc_id) of those this call removed."""
    removed: set[tuple[str, str]] = set()
    for mapping in {c.mapping for c in couplings}:
        rows = await conn.fetch(
            "DELETE FROM couplings WHERE mapping = $1 AND bc_id = ANY($2::uuid[]) "
            "RETURNING bc_id::text",
            mapping,
            [UUID(c.bc_id) for c in couplings if c.mapping == mapping],
        )
        removed |= {(mapping, r["bc_id"]) for r in rows}
    return removed
