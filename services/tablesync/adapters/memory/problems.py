"""Records that did not sync and couplings whose record vanished, in memory,
as ``adapters.postgres.problems`` reads and marks them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from tablesync.adapters.memory.database import (
    MemoryStore,
    StatusRow,
    is_uuid,
    utc_or_none,
    uuid_text,
)
from tablesync.core.couplings import Coupling
from tablesync.core.events import Side
from tablesync.core.stored import ProblemRecord, Selection

__all__ = ["MemoryProblems"]

_RESET_RETRY = timedelta(hours=1)


class MemoryProblems(MemoryStore):
    async def records(self, selection: Selection, *, limit: int = 1000) -> list[ProblemRecord]:
        await self._pause("problems.records")
        ids = {i.lower() for i in selection.record_ids}
        since = utc_or_none(selection.since)
        rows = [
            r
            for _, _, r in self._db.t.statuses.items()
            if (selection.mapping is None or r.mapping == selection.mapping)
            and (not ids or r.source_id in ids or r.destination_id in ids)
            and (since is None or r.last_failed_at >= since)
            and (not selection.skipped_only or r.status == "skipped")
        ]
        rows.sort(key=lambda r: r.last_failed_at, reverse=True)
        return [_problem(r) for r in rows[: max(limit, 0)]]

    async def reset(self, records: Sequence[ProblemRecord]) -> None:
        await self._pause("problems.reset")
        table = self._db.t.statuses
        retry_at = self._db.now() + _RESET_RETRY
        for r in records:
            row = table.get(r.mapping, (r.source_side, r.source_id))
            if row is not None:
                table.set(
                    r.mapping,
                    (r.source_side, r.source_id),
                    replace(row, status="failed", same_failures=0, next_attempt_at=retry_at),
                )

    async def couplings(
        self, selection: Selection, *, deleted_only: bool = False, limit: int = 100_000
    ) -> list[Coupling]:
        await self._pause("problems.couplings")
        ids = {uuid_text(i) for i in selection.record_ids if is_uuid(i)}
        if selection.record_ids and not ids:
            return []  # ids that are no GUIDs name no coupling
        since = utc_or_none(selection.since)
        rows = [
            p
            for name, pairs in self._db.t.couplings.items()
            if selection.mapping is None or name == selection.mapping
            for p in pairs.by_bc.values()
            if (not ids or p.coupling.bc_id in ids or p.coupling.dv_id in ids)
            and (since is None or p.coupled_at >= since)
            and (not deleted_only or p.coupling.bc_deleted or p.coupling.dv_deleted)
        ]
        rows.sort(key=lambda p: (p.coupling.mapping, p.coupled_at))
        return [p.coupling for p in rows[: max(limit, 0)]]

    async def flag_deleted(self, coupling: Coupling, side: Side) -> bool:
        await self._pause("problems.flag_deleted")
        bc_id = uuid_text(coupling.bc_id)
        pairs = self._db.pairs(coupling.mapping)
        pair = pairs.by_bc.get(bc_id) if pairs is not None else None
        if pair is None or pairs is None:
            return False
        c = pair.coupling
        if side == "bc":
            if c.bc_deleted:
                return False
            flagged = replace(c, bc_deleted=True)
        else:
            if c.dv_deleted:
                return False
            flagged = replace(c, dv_deleted=True)
        pairs.set(replace(pair, coupling=flagged))
        return True

    async def list_deleted(
        self, coupling: Coupling, side: Side, message: str, event: bytes
    ) -> None:
        await self._pause("problems.list_deleted")
        table = self._db.t.statuses
        now = self._db.now()
        source_id = coupling.id_on(side)
        old = table.get(coupling.mapping, (side, source_id))
        if old is not None:
            listed = replace(
                old, status="skipped", reason="deleted", message=message, last_failed_at=now
            )
        else:
            listed = StatusRow(
                mapping=coupling.mapping,
                source_side=side,
                source_id=source_id,
                status="skipped",
                reason="deleted",
                message=message,
                destination_id=coupling.id_on("dataverse" if side == "bc" else "bc"),
                attempts=1,
                same_failures=1,
                first_failed_at=now,
                last_failed_at=now,
                next_attempt_at=None,
                last_job_id=None,
                waiting_for=(),
                event=bytes(event),
            )
        table.set(coupling.mapping, (side, source_id), listed)


def _problem(r: StatusRow) -> ProblemRecord:
    return ProblemRecord(
        mapping=r.mapping,
        source_side=r.source_side,
        source_id=r.source_id,
        destination_id=r.destination_id,
        status=r.status,
        reason=r.reason,
        message=r.message,
        attempts=r.attempts,
        same_failures=r.same_failures,
        first_failed_at=r.first_failed_at,
        last_failed_at=r.last_failed_at,
        next_attempt_at=r.next_attempt_at,
        event=r.event,
    )
