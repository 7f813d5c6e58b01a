"""Records that did not sync and couplings whose record vanished: what the
operator's errors list shows and the recovery actions select from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from tablesync.adapters.postgres.couplings import coupling_from_record
from tablesync.core.couplings import Coupling
from tablesync.core.events import Side
from tablesync.core.stored import ProblemRecord, Selection

__all__ = ["ProblemRecord", "ProblemStore", "Selection"]


def _problem(r: Any) -> ProblemRecord:
    return ProblemRecord(
        mapping=r["mapping"],
        source_side=r["source_side"],
        source_id=r["source_id"],
        destination_id=r["destination_id"],
        status=r["status"],
        reason=r["reason"],
        message=r["message"],
        attempts=r["attempts"],
        same_failures=r["same_failures"],
        first_failed_at=r["first_failed_at"],
        last_failed_at=r["last_failed_at"],
        next_attempt_at=r["next_attempt_at"],
        event=bytes(r["event"]),
    )


class ProblemStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def records(self, selection: Selection, *, limit: int = 1000) -> list[ProblemRecord]:
        rows = await self._pool.fetch(
            """
            SELECT * FROM record_status
            WHERE ($1::text IS NULL OR mapping = $1)
              AND (cardinality($2::text[]) = 0 OR source_id = ANY($2) OR destination_id = ANY($2))
              AND ($3::timestamptz IS NULL OR last_failed_at >= $3)
              AND (NOT $4 OR status = 'skipped')
            ORDER BY last_failed_at DESC
            LIMIT $5
            """,
            selection.mapping,
            [i.lower() for i in selection.record_ids],
            selection.since,
            selection.skipped_only,
            limit,
        )
        return [_problem(r) for r in rows]

    async def reset(self, records: Sequence[ProblemRecord]) -> None:
        """Clears the skip: the next failure counts as the first one again."""
        await self._pool.executemany(
            "UPDATE record_status SET status = 'failed', same_failures = 0, "
            "next_attempt_at = now() + interval '1 hour' "
            "WHERE mapping = $1 AND source_side = $2 AND source_id = $3",
            [(r.mapping, r.source_side, r.source_id) for r in records],
        )

    async def couplings(
        self, selection: Selection, *, deleted_only: bool = False, limit: int = 100_000
    ) -> list[Coupling]:
        ids = [UUID(i) for i in selection.record_ids if _is_uuid(i)]
        if selection.record_ids and not ids:
            # Ids that are no GUIDs name no coupling; an empty list would
            # select every coupling instead.
            return []
        rows = await self._pool.fetch(
            """
            SELECT mapping, bc_id::text AS bc_id, dv_id::text AS dv_id, bc_key, bc_modified_at,
                   bc_etag, dv_modified_at, dv_etag, bc_deleted, dv_deleted, last_direction,
                   company
            FROM couplings
            WHERE ($1::text IS NULL OR mapping = $1)
              AND (cardinality($2::uuid[]) = 0 OR bc_id = ANY($2) OR dv_id = ANY($2))
              AND ($3::timestamptz IS NULL OR coupled_at >= $3)
              AND (NOT $4 OR bc_deleted OR dv_deleted)
            ORDER BY mapping, coupled_at
            LIMIT $5
            """,
            selection.mapping,
            ids,
            selection.since,
            deleted_only,
            limit,
        )
        return [coupling_from_record(r) for r in rows]

    async def flag_deleted(self, coupling: Coupling, side: Side) -> bool:
        """Marks a coupling's record on ``side`` as gone; False when it already was."""
        column = "bc_deleted" if side == "bc" else "dv_deleted"
        done = await self._pool.fetchval(
            f"UPDATE couplings SET {column} = true WHERE mapping = $1 AND bc_id = $2 "
            f"AND NOT {column} RETURNING true",
            coupling.mapping,
            UUID(coupling.bc_id),
        )
        return bool(done)

    async def list_deleted(
        self, coupling: Coupling, side: Side, message: str, event: bytes
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO record_status (mapping, source_side, source_id, status, reason, message,
                                       destination_id, event)
            VALUES ($1, $2, $3, 'skipped', 'deleted', $4, $5, $6)
            ON CONFLICT (mapping, source_side, source_id) DO UPDATE SET status = 'skipped',
                reason = 'deleted', message = EXCLUDED.message, last_failed_at = now()
            """,
            coupling.mapping,
            side,
            coupling.id_on(side),
            message,
            coupling.id_on("dataverse" if side == "bc" else "bc"),
            event,
        )


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True
