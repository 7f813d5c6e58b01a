"""Capture's watermarks and delta links, and the snapshots it served, in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tablesync.core.events import Side

__all__ = ["CheckpointStore"]


class CheckpointStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def watermark(self, side: Side, table: str) -> datetime | None:
        value: datetime | None = await self._pool.fetchval(
            "SELECT watermark FROM capture_checkpoints WHERE side = $1 AND table_name = $2",
            side,
            table,
        )
        return value

    async def store_watermark(self, side: Side, table: str, watermark: datetime) -> None:
        await self._pool.execute(
            """
            INSERT INTO capture_checkpoints (side, table_name, watermark) VALUES ($1, $2, $3)
            ON CONFLICT (side, table_name) DO UPDATE SET watermark = EXCLUDED.watermark,
                updated_at = now()
                WHERE capture_checkpoints.watermark IS NULL
                   OR capture_checkpoints.watermark < EXCLUDED.watermark
            """,
            side,
            table,
            watermark,
        )

    async def delta_link(self, side: Side, table: str) -> str | None:
        value: str | None = await self._pool.fetchval(
            "SELECT delta_link FROM capture_checkpoints WHERE side = $1 AND table_name = $2",
            side,
            table,
        )
        return value

    async def store_delta_link(self, side: Side, table: str, link: str | None) -> None:
        await self._pool.execute(
            """
            INSERT INTO capture_checkpoints (side, table_name, delta_link) VALUES ($1, $2, $3)
            ON CONFLICT (side, table_name) DO UPDATE SET delta_link = EXCLUDED.delta_link,
                updated_at = now()
            """,
            side,
            table,
            link,
        )

    async def begin_snapshot(self, job_id: str, side: Side, table: str) -> bool:
        done = await self._pool.fetchval(
            "INSERT INTO snapshots (job_id, side, table_name) VALUES ($1, $2, $3) "
            "ON CONFLICT (job_id) DO UPDATE SET job_id = EXCLUDED.job_id "
            "RETURNING finished_at IS NOT NULL",
            uuid.UUID(job_id),
            side,
            table,
        )
        return bool(done)

    async def finish_snapshot(self, job_id: str, records: int) -> None:
        await self._pool.execute(
            "UPDATE snapshots SET finished_at = now(), records = $2 WHERE job_id = $1",
            uuid.UUID(job_id),
            records,
        )
