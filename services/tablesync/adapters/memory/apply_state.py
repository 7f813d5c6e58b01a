"""Apply's state in memory, as ``adapters.postgres.apply_state`` keeps it.

``commit`` stages every effect of a batch (``database.Staged``), checks every
constraint, and only then applies them: an exception on the way (a job that
does not exist, an id that is no GUID) leaves nothing half-applied."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from tablesync.adapters.memory.claims import claim_held
from tablesync.adapters.memory.couplings import remove_pairs, write_pairs
from tablesync.adapters.memory.database import (
    IntentRow,
    MemoryStore,
    PartitionRow,
    PositionRow,
    Staged,
    StagedPairs,
    StatusRow,
    WriteRow,
    check,
    jsonb,
    utc,
    utc_or_none,
    uuid_text,
)
from tablesync.core.effects import (
    MESSAGE_LIMIT,
    BatchEffects,
    DueRecord,
    Intent,
    LogEntry,
    WriteTarget,
    counted_removals,
    latest_couplings,
    taken_over,
)
from tablesync.core.events import FieldValue, Side
from tablesync.core.plan import COUNTED
from tablesync.core.stored import JobError
from tablesync.errors import ClaimLost, Fenced
from tablesync.ports.claims import ClaimProof

__all__ = ["MemoryApplyState"]

_STATUSES = frozenset({"pending", "failed", "skipped"})
_SIDES = frozenset({"bc", "dataverse"})
_WRITE_KINDS = frozenset({"update", "delete"})
_ZERO = (0,) * len(COUNTED)
_LOG_DIRECTIONS = frozenset({None, "to_integration", "from_integration"})


class MemoryApplyState(MemoryStore):
    async def positions(self, mapping: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        await self._pause("apply_state.positions")
        wanted = set(topics)
        return {
            key: row.next_offset
            for key, row in self._db.t.positions.of(mapping).items()
            if key[0] in wanted
        }

    async def take_epochs(
        self, mapping: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        await self._pause("apply_state.take_epochs")
        table = self._db.t.epochs
        taken: dict[tuple[str, int], int] = {}
        for tp in partitions:
            epoch = (table.get(mapping, tp) or 0) + 1
            table.set(mapping, tp, epoch)
            taken[tp] = epoch
        return taken

    async def check_epochs(self, mapping: str, epochs: Mapping[tuple[str, int], int]) -> None:
        await self._pause("apply_state.check_epochs")
        self._check_epochs(mapping, epochs)

    def _check_epochs(self, mapping: str, epochs: Mapping[tuple[str, int], int]) -> None:
        table = self._db.t.epochs
        current = {tp: e for tp in epochs if (e := table.get(mapping, tp)) is not None}
        lost = taken_over(epochs, current)
        if lost:
            raise Fenced(mapping, lost)

    async def commit(self, effects: BatchEffects, *, claim: ClaimProof | None = None) -> None:
        await self._pause("apply_state.commit")
        if effects.epochs:
            self._check_epochs(effects.mapping, effects.epochs)
        if claim is not None and not claim_held(self._db, claim):
            raise ClaimLost(effects.mapping, sorted(effects.epochs))
        if effects.empty():
            return
        self._commit(effects)

    def _commit(self, e: BatchEffects) -> None:
        t = self._db.t
        now = self._db.now()
        mapping = e.mapping

        pairs = StagedPairs(t.couplings)
        write_pairs(pairs, latest_couplings(e.couplings), now)
        removed = remove_pairs(pairs, e.uncoupled)
        counted = counted_removals(e.if_uncoupled, removed)
        counters = {key: Counter(counter) for key, counter in e.counters.items()}
        log = list(e.log)
        for key, names, about in counted:
            counters.setdefault(key, Counter()).update(names)
            if about is not None and names:
                log.append(about.entry(mapping, key[0], names))

        intents = Staged(t.intents)
        for side, sid in e.resolved_intents:
            intents.drop(mapping, (side, sid))

        deleted = Staged(t.deleted)
        for side, rid in e.deleted:
            if deleted.get(mapping, (side, rid)) is None:
                deleted.put(mapping, (side, rid), now)

        writes = Staged(t.writes)
        for side, rid, kind in e.resolved_writes:
            writes.drop(mapping, (side, rid, kind))

        statuses = Staged(t.statuses)
        for side, sid in e.cleared:
            statuses.drop(mapping, (side, sid))
        for s in e.statuses:
            check(s.status in _STATUSES, f"record_status: status {s.status!r}")
            check(s.source_side in _SIDES, f"record_status: source_side {s.source_side!r}")
            job = uuid_text(s.job_id) if s.job_id else None
            old = statuses.get(s.mapping, (s.source_side, s.source_id))
            statuses.put(
                s.mapping,
                (s.source_side, s.source_id),
                StatusRow(
                    mapping=s.mapping,
                    source_side=s.source_side,
                    source_id=s.source_id,
                    status=s.status,
                    reason=s.reason,
                    message=s.message,
                    destination_id=s.destination_id,
                    attempts=s.attempts,
                    same_failures=s.same_failures,
                    first_failed_at=old.first_failed_at if old is not None else now,
                    last_failed_at=now,
                    next_attempt_at=utc_or_none(s.next_attempt_at),
                    last_job_id=job,
                    waiting_for=tuple(s.waiting_for),
                    event=bytes(s.event),
                ),
            )

        errors: list[JobError] = []
        next_id = t.last_error_id
        for r in e.errors:
            job = self._existing_job(r.job_id, "job_errors")
            next_id += 1
            errors.append(
                JobError(
                    id=next_id,
                    job_id=job,
                    mapping=r.mapping,
                    direction=r.direction,
                    source_side=r.source_side,
                    source_id=r.source_id,
                    destination_id=r.destination_id,
                    message=r.message[:MESSAGE_LIMIT],
                    detail=r.detail[:8192],
                    occurred_at=now,
                )
            )

        logged = [self._log_row(entry) for entry in log]

        parts = Staged(t.partitions)
        for (job_id, topic, partition), counter in counters.items():
            job = self._existing_job(job_id, "job_partitions")
            row = parts.get(job, (topic, partition))
            before = row.counts if row is not None else _ZERO
            counts = tuple(n + counter.get(c, 0) for n, c in zip(before, COUNTED, strict=True))
            parts.put(
                job,
                (topic, partition),
                PartitionRow(counts, row.finished_at if row is not None else None),
            )
        for job_id, topic, partition in e.finished:
            job = self._existing_job(job_id, "job_partitions")
            row = parts.get(job, (topic, partition))
            if row is None:
                parts.put(job, (topic, partition), PartitionRow(_ZERO, now))
            elif row.finished_at is None:
                parts.put(job, (topic, partition), replace(row, finished_at=now))

        positions = Staged(t.positions)
        for where, offset in e.positions.items():
            position = positions.get(mapping, where)
            if position is None or position.next_offset < offset:
                positions.put(mapping, where, PositionRow(offset, now))

        # Every row is built and every constraint held: nothing below can fail.
        pairs.apply()
        intents.apply()
        deleted.apply()
        writes.apply()
        statuses.apply()
        t.errors.extend(errors)
        t.last_error_id = next_id
        t.record_log.extend(logged)
        parts.apply()
        positions.apply()
        # As the Postgres adapter does, the counted removals show in the
        # batch's own counters too (its summary line reads them).
        for key, names, about in counted:
            e.count(*key, *names, about=about)

    def _log_row(self, entry: LogEntry) -> LogEntry:
        """The row as the record_log table keeps it, its constraints checked."""
        check(entry.source_side in _SIDES, f"record_log: source_side {entry.source_side!r}")
        check(
            bool(entry.decision) and set(entry.decision) <= set(COUNTED),
            f"record_log: decision {entry.decision!r}",
        )
        check(entry.direction in _LOG_DIRECTIONS, f"record_log: direction {entry.direction!r}")
        return replace(
            entry,
            job_id=self._existing_job(entry.job_id, "record_log"),
            message=entry.message[:MESSAGE_LIMIT],
            at=utc(entry.at),
        )

    def _existing_job(self, job_id: str, table: str) -> str:
        job = uuid_text(job_id)
        check(job in self._db.t.jobs, f"{table}: job {job} does not exist")
        return job

    async def record_intents(
        self, intents: Sequence[Intent], *, held: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        await self._pause("apply_state.record_intents")
        if not intents:
            return
        if held:
            self._check_epochs(intents[0].mapping, held)
        now = self._db.now()
        staged = Staged(self._db.t.intents)
        for i in intents:
            key = (i.source_side, i.source_id)
            old = staged.get(i.mapping, key)
            staged.put(
                i.mapping,
                key,
                IntentRow(
                    dest_id=i.dest_id,
                    created_at=old.created_at if old is not None else utc(i.created_at),
                    payload=jsonb(i.sent),
                    touched_at=now,
                    made=False,
                ),
            )
        staged.apply()

    async def record_made(
        self,
        mapping: str,
        items: Sequence[tuple[Side, str, str]],
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        await self._pause("apply_state.record_made")
        if held and items:
            self._check_epochs(mapping, held)
        table = self._db.t.intents
        for side, sid, did in items:
            row = table.get(mapping, (side, sid))
            if row is not None:
                table.set(mapping, (side, sid), replace(row, dest_id=did, made=True))

    async def announce_writes(
        self,
        mapping: str,
        targets: Sequence[WriteTarget],
        images: Mapping[WriteTarget, dict[str, FieldValue]] | None = None,
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> set[WriteTarget]:
        await self._pause("apply_state.announce_writes")
        if not targets:
            return set()
        if held:
            self._check_epochs(mapping, held)
        images = images or {}
        now = self._db.now()
        table = self._db.t.writes
        earlier = {t for t in targets if table.get(mapping, t) is not None}
        staged = Staged(table)
        for target in targets:
            check(target[2] in _WRITE_KINDS, f"write_intents: kind {target[2]!r}")
            old = staged.get(mapping, target)
            new = (jsonb(images[target]),) if target in images else ()
            if old is None:
                staged.put(mapping, target, WriteRow(now, new))
            elif new and not _contains(old.images[-1:], new[0]):
                # Kept in the order announced, the latest last: an image
                # announced again after another one is the latest again.
                staged.put(mapping, target, replace(old, images=old.images + new))
        staged.apply()
        return earlier

    async def written_images(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> dict[tuple[Side, str], list[dict[str, FieldValue]]]:
        await self._pause("apply_state.written_images")
        table = self._db.t.writes
        found: dict[tuple[Side, str], list[dict[str, FieldValue]]] = {}
        for side, rid in records:
            row = table.get(mapping, (side, rid, "update"))
            if row is not None:
                found[(side, rid)] = [dict(image) for image in row.images]
        return found

    async def announced_writes(
        self, mapping: str, targets: Sequence[WriteTarget]
    ) -> set[WriteTarget]:
        await self._pause("apply_state.announced_writes")
        table = self._db.t.writes
        return {t for t in targets if table.get(mapping, t) is not None}

    async def deleted_among(
        self, mapping: str, records: Sequence[tuple[Side, str]]
    ) -> set[tuple[Side, str]]:
        await self._pause("apply_state.deleted_among")
        table = self._db.t.deleted
        return {r for r in records if table.get(mapping, r) is not None}

    async def intents_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, Intent]:
        await self._pause("apply_state.intents_of")
        table = self._db.t.intents
        found: dict[str, Intent] = {}
        for sid in source_ids:
            row = table.get(mapping, (side, sid))
            if row is not None:
                found[sid] = _intent(mapping, side, sid, row)
        return found

    async def named_by_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> set[str]:
        await self._pause("apply_state.named_by_intents")
        wanted = set(dest_ids)
        return {
            row.dest_id
            for (side, _), row in self._db.t.intents.of(mapping).items()
            if side == source_side and row.dest_id is not None and row.dest_id in wanted
        }

    async def open_intents(
        self, mapping: str, source_side: Side, dest_ids: Sequence[str]
    ) -> list[Intent]:
        await self._pause("apply_state.open_intents")
        wanted = set(dest_ids)
        return [
            _intent(mapping, source_side, sid, row)
            for (side, sid), row in self._db.t.intents.of(mapping).items()
            if side == source_side and (row.dest_id is None or row.dest_id in wanted)
        ]

    async def claim_stale_intents(
        self, mapping: str, older_than_s: float, limit: int
    ) -> list[Intent]:
        await self._pause("apply_state.claim_stale_intents")
        t = self._db.t
        now = self._db.now()
        cutoff = now - timedelta(seconds=older_than_s)
        retried = t.statuses.of(mapping)
        stale = [
            (key, row)
            for key, row in t.intents.of(mapping).items()
            if row.touched_at < cutoff and key not in retried
        ]
        stale.sort(key=lambda kr: kr[1].touched_at)
        claimed: list[Intent] = []
        for (side, sid), row in stale[: max(limit, 0)]:
            touched = replace(row, touched_at=now)
            t.intents.set(mapping, (side, sid), touched)
            claimed.append(_intent(mapping, side, sid, touched))
        return claimed

    async def resolve_intents(self, mapping: str, sources: Sequence[tuple[Side, str]]) -> None:
        await self._pause("apply_state.resolve_intents")
        for side, sid in sources:
            self._db.t.intents.pop(mapping, (side, sid))

    async def claim_due(self, mapping: str, limit: int, lease_s: float) -> list[DueRecord]:
        await self._pause("apply_state.claim_due")
        db = self._db
        now = db.now()

        def due(row: StatusRow) -> bool:
            if row.status == "skipped":
                return False
            if row.next_attempt_at is not None and row.next_attempt_at <= now:
                return True
            if row.status != "pending":
                return False
            for target in row.waiting_for:
                pairs = db.pairs(target)
                if pairs is not None and pairs.synced_after(row.last_failed_at):
                    return True
            return False

        rows = [row for row in db.t.statuses.of(mapping).values() if due(row)]
        # ORDER BY next_attempt_at: nulls last.
        rows.sort(key=lambda r: (r.next_attempt_at is None, r.next_attempt_at or now))
        rows = rows[: max(limit, 0)]
        lease_end = now + timedelta(seconds=lease_s)
        for row in rows:
            db.t.statuses.set(
                mapping,
                (row.source_side, row.source_id),
                replace(row, next_attempt_at=lease_end, last_failed_at=now),
            )
        return [_due(row) for row in rows]

    async def statuses_of(
        self, mapping: str, side: Side, source_ids: Sequence[str]
    ) -> dict[str, DueRecord]:
        await self._pause("apply_state.statuses_of")
        table = self._db.t.statuses
        found: dict[str, DueRecord] = {}
        for sid in source_ids:
            row = table.get(mapping, (side, sid))
            if row is not None:
                found[sid] = _due(row)
        return found


def _intent(mapping: str, side: Side, source_id: str, row: IntentRow) -> Intent:
    return Intent(
        mapping, side, source_id, row.dest_id, row.created_at, dict(row.payload), made=row.made
    )


def _due(row: StatusRow) -> DueRecord:
    return DueRecord(
        mapping=row.mapping,
        source_side=row.source_side,
        source_id=row.source_id,
        status=row.status,
        message=row.message,
        attempts=row.attempts,
        same_failures=row.same_failures,
        event=row.event,
    )


def _contains(images: Sequence[dict[str, FieldValue]], image: dict[str, FieldValue]) -> bool:
    """jsonb's ``images @> '[image]'``: some kept image holds every field of
    ``image`` with an equal JSON value."""
    return any(
        all(name in kept and _same_json(kept[name], value) for name, value in image.items())
        for kept in images
    )


def _same_json(a: object, b: object) -> bool:
    # JSON keeps booleans apart from numbers, which Python's == does not.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
