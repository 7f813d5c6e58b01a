"""Everything apply writes after a batch, in one transaction, and what it reads back.

The effects of a batch — couplings, job counters, error rows, the record
log, per-record retry status, intents resolved and the position reached on each partition —
are committed together, and the position only ever moves forward, so a batch
replayed after a crash finds its own position and changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from tablesync.adapters.postgres.claims import claim_held
from tablesync.adapters.postgres.couplings import delete_couplings, write_couplings
from tablesync.core.effects import (
    MESSAGE_LIMIT,
    BatchEffects,
    DueRecord,
    ErrorRow,
    Intent,
    LogEntry,
    StatusChange,
    WriteTarget,
    counted_removals,
    latest_couplings,
    taken_over,
)
from tablesync.core.events import FieldValue, Side
from tablesync.core.plan import COUNTED
from tablesync.errors import ClaimLost, Fenced
from tablesync.ports.claims import ClaimProof

__all__ = [
    "ApplyStateStore",
    "BatchEffects",
    "DueRecord",
    "ErrorRow",
    "Intent",
    "StatusChange",
    "WriteTarget",
]


class ApplyStateStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def positions(self, mapping: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        rows = await self._pool.fetch(
            "SELECT topic, partition, next_offset FROM apply_positions "
            "WHERE mapping = $1 AND topic = ANY($2::text[])",
            mapping,
            list(topics),
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def take_epochs(
        self, mapping: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        rows = await self._pool.fetch(
            """
            INSERT INTO apply_epochs (mapping, topic, partition, epoch)
            SELECT $1, t, p, 1 FROM unnest($2::text[], $3::int[]) AS x(t, p)
            ON CONFLICT (mapping, topic, partition)
                DO UPDATE SET epoch = apply_epochs.epoch + 1, taken_at = now()
            RETURNING topic, partition, epoch
            """,
            mapping,
            [t for t, _ in partitions],
            [p for _, p in partitions],
        )
        return {(r["topic"], r["partition"]): r["epoch"] for r in rows}

    async def check_epochs(self, mapping: str, epochs: Mapping[tuple[str, int], int]) -> None:
        if epochs:
            await _check_epochs(self._pool, mapping, epochs, lock="")

    async def commit(self, effects: BatchEffects, *, claim: ClaimProof | None = None) -> None:
        if effects.empty() and not effects.epochs:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if effects.epochs:
                # Held until the commit ends: an instance taking one of these
                # partitions meanwhile waits, then fences off whatever follows.
                await _check_epochs(conn, effects.mapping, effects.epochs, lock="FOR UPDATE")
            if claim is not None and not await claim_held(conn, claim):
                raise ClaimLost(effects.mapping, sorted(effects.epochs))
            if not effects.empty():
                await _write(conn, effects)

    async def record_intents(
        self, intents: Sequence[Intent], *, held: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Announces creates before the destination is called (committed on return)."""
        if not intents:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if held:
                await _check_epochs(conn, intents[0].mapping, held, lock="FOR SHARE")
            await conn.executemany(
                """
                INSERT INTO create_intents
                    (mapping, source_side, source_id, dest_id, created_at, payload)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (mapping, source_side, source_id)
                    DO UPDATE SET dest_id = EXCLUDED.dest_id, payload = EXCLUDED.payload,
                                  made = false, touched_at = now()
                """,
                [
                    (i.mapping, i.source_side, i.source_id, i.dest_id, i.created_at, i.sent)
                    for i in intents
                ],
            )

    async def record_made(
        self,
        mapping: str,
        items: Sequence[tuple[Side, str, str]],
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        """Notes that announced creates were made, and the ids they got, as soon
        as the API answered."""
        if not items:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if held:
                await _check_epochs(conn, mapping, held, lock="FOR SHARE")
            # One statement for the lot; a record named twice keeps its last id,
            # as one update after another would have left it.
            last = {(side, sid): did for side, sid, did in items}
            await conn.execute(
                "UPDATE create_intents c SET dest_id = m.dest_id, made = true "
                "FROM unnest($2::text[], $3::text[], $4::text[]) "
                "AS m(source_side, source_id, dest_id) "
                "WHERE c.mapping = $1 AND c.source_side = m.source_side "
                "AND c.source_id = m.source_id",
                mapping,
                [side for side, _ in last],
                [sid for _, sid in last],
                list(last.values()),
            )

    async def announce_writes(
        self,
        mapping: str,
        targets: Sequence[WriteTarget],
        images: Mapping[WriteTarget, dict[str, FieldValue]] | None = None,
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> set[WriteTarget]:
        """Announces updates and deletions before the destination is called
        (committed on return), each update with what it leaves on its record
        (``images``, kept after those of earlier attempts, the latest last);
        returns those an attempt that did not commit had announced already,
        which may have happened."""
        if not targets:
            return set()
        images = images or {}
        earlier = await self.announced_writes(mapping, targets)
        async with self._pool.acquire() as conn, conn.transaction():
            if held:
                await _check_epochs(conn, mapping, held, lock="FOR SHARE")
            await conn.executemany(
                "INSERT INTO write_intents (mapping, side, record_id, kind, images) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mapping, side, record_id, kind) "
                "DO UPDATE SET images = CASE "
                "WHEN jsonb_build_array(write_intents.images -> -1) @> EXCLUDED.images "
                "THEN write_intents.images ELSE write_intents.images || EXCLUDED.images END",
                [(mapping, *t, [images[t]] if t in images else []) for t in targets],
            )
        return earlier

    async def written_images(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> dict[tuple[Side, str], list[dict[str, FieldValue]]]:
        """Of ``records``, those with an announced update not yet committed,
        with what each attempt that announced it would leave on the record."""
        if not records:
            return {}
        rows = await self._pool.fetch(
            "SELECT side, record_id, images FROM write_intents "
            "WHERE mapping = $1 AND kind = 'update' AND (side, record_id) IN "
            "(SELECT * FROM unnest($2::text[], $3::text[]))",
            mapping,
            [side for side, _ in records],
            [rid for _, rid in records],
        )
        return {(r["side"], r["record_id"]): list(r["images"]) for r in rows}

    async def announced_writes(
        self, mapping: str, targets: Sequence[WriteTarget]
    ) -> set[WriteTarget]:
        """Of ``targets``, those announced and not yet committed."""
        if not targets:
            return set()
        rows = await self._pool.fetch(
            "SELECT side, record_id, kind FROM write_intents WHERE mapping = $1 "
            "AND (side, record_id, kind) IN "
            "(SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))",
            mapping,
            [t[0] for t in targets],
            [t[1] for t in targets],
            [t[2] for t in targets],
        )
        return {(r["side"], r["record_id"], r["kind"]) for r in rows}

    async def deleted_among(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> set[tuple[Side, str]]:
        """Of ``records``, those whose deletion tablesync has seen."""
        rows = await self._pool.fetch(
            "SELECT side, record_id FROM deleted_records WHERE mapping = $1 "
            "AND (side, record_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
            mapping,
            [side for side, _ in records],
            [rid for _, rid in records],
        )
        return {(r["side"], r["record_id"]) for r in rows}

    async def intents_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, Intent]:
        if not source_ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT * FROM create_intents WHERE mapping = $1 AND source_side = $2 "
            "AND source_id = ANY($3::text[])",
            mapping,
            side,
            list(source_ids),
        )
        return {r["source_id"]: _intent(r) for r in rows}

    async def named_by_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> set[str]:
        """Of ``dest_ids``, the records open intents from ``source_side`` name."""
        if not dest_ids:
            return set()
        rows = await self._pool.fetch(
            "SELECT dest_id FROM create_intents WHERE mapping = $1 AND source_side = $2 "
            "AND dest_id = ANY($3::text[])",
            mapping,
            source_side,
            list(dest_ids),
        )
        return {r["dest_id"] for r in rows}

    async def open_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> list[Intent]:
        """Open intents of creates from ``source_side`` that name one of
        ``dest_ids``, or whose destination id is not known yet."""
        rows = await self._pool.fetch(
            "SELECT * FROM create_intents WHERE mapping = $1 AND source_side = $2 "
            "AND (dest_id IS NULL OR dest_id = ANY($3::text[]))",
            mapping,
            source_side,
            list(dest_ids),
        )
        return [_intent(r) for r in rows]

    async def claim_stale_intents(
        self, mapping: str, older_than_s: float, limit: int
    ) -> list[Intent]:
        """Intents nobody has announced or looked at for ``older_than_s`` and whose
        source has no retry scheduled: left by an attempt that died. Claimed by
        touching them, so two instances do not settle one intent at once."""
        rows = await self._pool.fetch(
            """
            UPDATE create_intents ci SET touched_at = now()
            WHERE (ci.mapping, ci.source_side, ci.source_id) IN (
                SELECT c.mapping, c.source_side, c.source_id FROM create_intents c
                WHERE c.mapping = $1
                  AND c.touched_at < now() - make_interval(secs => $2)
                  AND NOT EXISTS (
                      SELECT 1 FROM record_status rs
                      WHERE rs.mapping = c.mapping AND rs.source_side = c.source_side
                        AND rs.source_id = c.source_id)
                ORDER BY c.touched_at
                LIMIT $3
                FOR UPDATE SKIP LOCKED)
            RETURNING ci.*
            """,
            mapping,
            older_than_s,
            limit,
        )
        return [_intent(r) for r in rows]

    async def resolve_intents(self, mapping: str, sources: Sequence[tuple[Side, str]]) -> None:
        if sources:
            await _delete_sources(self._pool, "create_intents", mapping, sources)

    async def claim_due(self, mapping: str, limit: int, lease_s: float) -> list[DueRecord]:
        """Records whose retry is due, or whose lookup target got new couplings since.

        Claimed with a lease (next attempt pushed forward) so two instances
        do not retry the same record at once."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT rs.* FROM record_status rs
                WHERE rs.mapping = $1 AND rs.status <> 'skipped'
                  AND (rs.next_attempt_at <= now()
                       OR (rs.status = 'pending' AND EXISTS (
                             SELECT 1 FROM couplings c
                             WHERE c.mapping = ANY(rs.waiting_for)
                               AND c.last_synced_at > rs.last_failed_at)))
                ORDER BY rs.next_attempt_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
                """,
                mapping,
                limit,
            )
            if rows:
                await conn.executemany(
                    "UPDATE record_status SET next_attempt_at = now() + make_interval(secs => $4),"
                    " last_failed_at = now() "
                    "WHERE mapping = $1 AND source_side = $2 AND source_id = $3",
                    [(mapping, r["source_side"], r["source_id"], lease_s) for r in rows],
                )
        return [_due(r) for r in rows]

    async def statuses_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, DueRecord]:
        if not source_ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT * FROM record_status WHERE mapping = $1 AND source_side = $2 "
            "AND source_id = ANY($3::text[])",
            mapping,
            side,
            list(source_ids),
        )
        return {r["source_id"]: _due(r) for r in rows}


def _due(r: asyncpg.Record) -> DueRecord:
    return DueRecord(
        mapping=r["mapping"],
        source_side=r["source_side"],
        source_id=r["source_id"],
        status=r["status"],
        message=r["message"],
        attempts=r["attempts"],
        same_failures=r["same_failures"],
        event=bytes(r["event"]),
    )


async def _check_epochs(
    conn: Any, mapping: str, epochs: Mapping[tuple[str, int], int], *, lock: str
) -> None:
    """Raises ``Fenced`` unless every partition is still held under its epoch;
    ``lock`` (FOR SHARE, FOR UPDATE) keeps it so until the transaction ends."""
    rows = await conn.fetch(
        "SELECT topic, partition, epoch FROM apply_epochs "
        "WHERE mapping = $1 AND (topic, partition) IN "
        "(SELECT * FROM unnest($2::text[], $3::int[]))"
        + (f" ORDER BY topic, partition {lock}" if lock else ""),
        mapping,
        [t for t, _ in epochs],
        [p for _, p in epochs],
    )
    current = {(r["topic"], r["partition"]): r["epoch"] for r in rows}
    lost = taken_over(epochs, current)
    if lost:
        raise Fenced(mapping, lost)


def _intent(r: asyncpg.Record) -> Intent:
    return Intent(
        r["mapping"],
        r["source_side"],
        r["source_id"],
        r["dest_id"],
        r["created_at"],
        r["payload"],
        made=r["made"],
    )


async def _write(conn: asyncpg.Connection, e: BatchEffects) -> None:
    await write_couplings(conn, latest_couplings(e.couplings))
    removed = await delete_couplings(conn, e.uncoupled)
    for key, names, about in counted_removals(e.if_uncoupled, removed):
        e.count(*key, *names, about=about)
    if e.resolved_intents:
        await _delete_sources(conn, "create_intents", e.mapping, e.resolved_intents)
    if e.deleted:
        await conn.executemany(
            "INSERT INTO deleted_records (mapping, side, record_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            [(e.mapping, side, rid) for side, rid in e.deleted],
        )
    if e.resolved_writes:
        await conn.execute(
            "DELETE FROM write_intents w "
            "USING unnest($2::text[], $3::text[], $4::text[]) AS r(side, record_id, kind) "
            "WHERE w.mapping = $1 AND w.side = r.side AND w.record_id = r.record_id "
            "AND w.kind = r.kind",
            e.mapping,
            [t[0] for t in e.resolved_writes],
            [t[1] for t in e.resolved_writes],
            [t[2] for t in e.resolved_writes],
        )
    if e.cleared:
        await _delete_sources(conn, "record_status", e.mapping, e.cleared)
    if e.statuses:
        await conn.executemany(
            """
            INSERT INTO record_status (mapping, source_side, source_id, status, reason, message,
                destination_id, attempts, same_failures, next_attempt_at, last_job_id,
                waiting_for, event)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (mapping, source_side, source_id) DO UPDATE SET
                status = EXCLUDED.status, reason = EXCLUDED.reason, message = EXCLUDED.message,
                destination_id = EXCLUDED.destination_id, attempts = EXCLUDED.attempts,
                same_failures = EXCLUDED.same_failures, next_attempt_at = EXCLUDED.next_attempt_at,
                last_job_id = EXCLUDED.last_job_id, waiting_for = EXCLUDED.waiting_for,
                event = EXCLUDED.event, last_failed_at = now()
            """,
            [
                (
                    s.mapping,
                    s.source_side,
                    s.source_id,
                    s.status,
                    s.reason,
                    s.message,
                    s.destination_id,
                    s.attempts,
                    s.same_failures,
                    s.next_attempt_at,
                    UUID(s.job_id) if s.job_id else None,
                    list(s.waiting_for),
                    s.event,
                )
                for s in e.statuses
            ],
        )
    if e.errors:
        await conn.executemany(
            """
            INSERT INTO job_errors (job_id, mapping, direction, source_side, source_id,
                                    destination_id, message, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """,
            [
                (
                    UUID(r.job_id),
                    r.mapping,
                    r.direction,
                    r.source_side,
                    r.source_id,
                    r.destination_id,
                    r.message[:MESSAGE_LIMIT],
                    r.detail[:8192],
                )
                for r in e.errors
            ],
        )
    if e.counters:
        columns = ", ".join(COUNTED)
        params = ", ".join(f"${i + 4}" for i in range(len(COUNTED)))
        updates = ", ".join(f"{c} = job_partitions.{c} + EXCLUDED.{c}" for c in COUNTED)
        await conn.executemany(
            f"INSERT INTO job_partitions (job_id, topic, partition, {columns}) "
            f"VALUES ($1, $2, $3, {params}) "
            f"ON CONFLICT (job_id, topic, partition) DO UPDATE SET {updates}",
            [
                (UUID(job), topic, part, *(counter.get(c, 0) for c in COUNTED))
                for (job, topic, part), counter in e.counters.items()
            ],
        )
    if e.log:
        await write_log(conn, e.log)
    if e.finished:
        await conn.executemany(
            "INSERT INTO job_partitions (job_id, topic, partition, finished_at) "
            "VALUES ($1, $2, $3, now()) ON CONFLICT (job_id, topic, partition) "
            "DO UPDATE SET finished_at = coalesce(job_partitions.finished_at, now())",
            [(UUID(job), topic, part) for job, topic, part in e.finished],
        )
    if e.positions:
        await conn.executemany(
            """
            INSERT INTO apply_positions (mapping, topic, partition, next_offset)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (mapping, topic, partition) DO UPDATE
                SET next_offset = EXCLUDED.next_offset, updated_at = now()
                WHERE apply_positions.next_offset < EXCLUDED.next_offset
            """,
            [(e.mapping, t, p, off) for (t, p), off in e.positions.items()],
        )


_SEPARATOR = "\x1f"
"""Joins a row's names into one text of an array parameter: unnest takes
arrays of one dimension, and a row's names are a list of any length. Counter
names and the mapping's field names (identifiers of the sides) never hold it."""


async def write_log(conn: asyncpg.Connection, entries: Sequence[LogEntry]) -> None:
    """The record log's rows, in one statement however many: a full
    synchronization commits batches of thousands."""
    await conn.execute(
        "INSERT INTO record_log (mapping, company, source_side, source_id, counterpart_id, "
        "job_id, decision, direction, fields, message, logged_at) "
        "SELECT mapping, company, side, id, other, job, string_to_array(decision, $12), "
        "direction, string_to_array(fields, $12), message, at "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], "
        "$7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[]) "
        "AS r(mapping, company, side, id, other, job, decision, direction, fields, message, at)",
        [e.mapping for e in entries],
        [e.company for e in entries],
        [e.source_side for e in entries],
        [e.source_id for e in entries],
        [e.counterpart_id for e in entries],
        [UUID(e.job_id) for e in entries],
        [_SEPARATOR.join(e.decision) for e in entries],
        [e.direction for e in entries],
        [_SEPARATOR.join(e.fields) for e in entries],
        [e.message[:MESSAGE_LIMIT] for e in entries],
        [e.at for e in entries],
        _SEPARATOR,
    )


async def _delete_sources(
    conn: Any, table: str, mapping: str, sources: Sequence[tuple[Side, str]]
) -> None:
    """Deletes the rows of ``table`` (keyed by mapping, source side and source
    id) of ``sources``, in one statement."""
    await conn.execute(
        f"DELETE FROM {table} t USING unnest($2::text[], $3::text[]) AS s(side, id) "
        "WHERE t.mapping = $1 AND t.source_side = s.side AND t.source_id = s.id",
        mapping,
        [side for side, _ in sources],
        [sid for _, sid in sources],
    )
