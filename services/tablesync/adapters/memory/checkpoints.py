"""Capture's watermarks and delta links, and the snapshots it served, in memory, as
``adapters.postgres.checkpoints`` keeps them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tablesync.adapters.memory.database import (
    CheckpointRow,
    MemoryStore,
    SnapshotRow,
    utc,
    uuid_text,
)
from tablesync.core.events import Side

__all__ = ["MemoryCheckpoints"]


class MemoryCheckpoints(MemoryStore):
    async def watermark(self, side: Side, table: str) -> datetime | None:
        await self._pause("checkpoints.watermark")
        row = self._db.t.checkpoints.get((side, table))
        return row.watermark if row is not None else None

    async def store_watermark(self, side: Side, table: str, watermark: datetime) -> None:
        await self._pause("checkpoints.store_watermark")
        rows = self._db.t.checkpoints
        moment = utc(watermark)
        row = rows.get((side, table))
        if row is None:
            rows[(side, table)] = CheckpointRow(moment, self._db.now())
        elif row.watermark is None or row.watermark < moment:
            rows[(side, table)] = replace(row, watermark=moment, updated_at=self._db.now())

    async def delta_link(self, side: Side, table: str) -> str | None:
        await self._pause("checkpoints.delta_link")
        row = self._db.t.checkpoints.get((side, table))
        return row.delta_link if row is not None else None

    async def store_delta_link(self, side: Side, table: str, link: str | None) -> None:
        await self._pause("checkpoints.store_delta_link")
        rows = self._db.t.checkpoints
        row = rows.get((side, table)) or CheckpointRow(None, self._db.now())
        rows[(side, table)] = replace(row, delta_link=link, updated_at=self._db.now())

    async def begin_snapshot(self, job_id: str, side: Side, table: str) -> bool:
        await self._pause("checkpoints.begin_snapshot")
        rows = self._db.t.snapshots
        key = uuid_text(job_id)
        row = rows.get(key)
        if row is None:
            rows[key] = SnapshotRow(side, table, 0, self._db.now(), None)
            return False
        return row.finished_at is not None

    async def finish_snapshot(self, job_id: str, records: int) -> None:
        await self._pause("checkpoints.finish_snapshot")
        rows = self._db.t.snapshots
        key = uuid_text(job_id)
        row = rows.get(key)
        if row is not None:
            rows[key] = replace(row, records=records, finished_at=self._db.now())
