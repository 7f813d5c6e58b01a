"""The operator's recovery actions on the errors list, as BC's Coupled Data
Synchronization Errors page has them: retry, restore, delete records,
delete couplings, find deleted; and uncoupling one record. The application
layer (``tablesync.application``) checks the request and calls these.

Each action runs here, in the caller's process, through the same ``Applier``
the apply service uses — the same rules, intents and transaction — and writes
one job row per mapping and direction it touched, of BC's type
(synchronization, coupling, uncoupling), with its counts. What an action
decides or uncouples it claims first, as apply instances do
(``runtime.claiming``): it waits while an instance decides one of its pairs,
and decides on what that instance committed; ``errors.ClaimsBusy`` when the
records stay held longer than ``claim_wait_s``."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from tablesync.adapters.avro import Codec
from tablesync.core.couplings import Coupling
from tablesync.core.effects import BatchEffects, Decided
from tablesync.core.events import Direction, RecordChanged, Side, other_side
from tablesync.core.mappings import DeletionPolicy, MappingSet, TableMapping, direction_of
from tablesync.core.plan import JobContext
from tablesync.core.records import Row
from tablesync.core.stored import ProblemRecord, Selection
from tablesync.errors import AlreadyCoupled, RecordNotFound
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaim, PairClaims, PairKey
from tablesync.ports.clock import Clock
from tablesync.ports.state import StateStores
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tablesync.runtime.claiming import apply_claimed, claim_stable
from tablesync.settings import SyncSettings

__all__ = ["ACTION_TOPIC", "ActionResult", "Actions"]

log = structlog.get_logger()

ACTION_TOPIC = "(action)"


@dataclass
class ActionResult:
    action: str
    jobs: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    records: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "jobs": self.jobs,
            "records": self.records,
            "counts": dict(self.counts),
        }


class Actions:
    def __init__(
        self,
        *,
        stores: StateStores,
        apis: dict[Side, SideApi],
        mappings: MappingSet,
        settings: SyncSettings,
        codec: Codec,
        clock: Clock,
        claims: PairClaims,
    ) -> None:
        self.stores = stores
        self.apis = apis
        self.mappings = mappings
        self.settings = settings
        self.codec = codec
        self.clock = clock
        self.claims = claims
        self.jobs = stores.jobs
        self.problems = stores.problems
        self.state = stores.apply_state

    # retry

    async def retry(self, selection: Selection) -> ActionResult:
        """Clears the skip of the selected records and syncs them now, each in
        its own direction, from the record as it is now on its side."""
        records = await self.problems.records(selection)
        result = ActionResult("retry", records=len(records))
        await self.problems.reset(records)
        groups: dict[tuple[str, Side], list[ProblemRecord]] = defaultdict(list)
        for r in records:
            groups[(r.mapping, r.source_side)].append(r)
        for (mapping, side), group in groups.items():
            if mapping not in self.mappings:
                continue
            table = self.mappings.get(mapping).table(side)
            rows = await self.apis[side].get_many(table, [r.source_id for r in group])
            now = self.clock.now()
            events = [_as_read(side, table, r.source_id, rows.get(r.source_id), now) for r in group]
            await self._run(result, mapping, direction_of(side), "retry", events)
        return result

    async def sync_now(self, mapping: str, side: Side, record_id: str) -> ActionResult:
        """Synchronizes one record now, BC's "Synchronize" on a record. A coupled
        pair is compared field by field whatever the versions say, in each
        direction the mapping syncs, BC's first (as a full synchronization's
        steps are, unconditionally: fields both directions carry go the
        conflict policy's way); an uncoupled record is matched, coupled or
        created on the other side, its mapping's "sync only coupled records"
        set aside as a full synchronization does. ``RecordNotFound`` when
        ``side`` has no such record."""
        m = self.mappings.get(mapping)
        result = ActionResult("sync_now")
        named = (await self.apis[side].get_many(m.table(side), [record_id])).get(record_id)
        if named is None:
            raise RecordNotFound(side, m.table(side), record_id)
        ids: dict[Side, str] = {side: record_id}
        coupling = await self.stores.couplings.get(mapping, side, record_id)
        if coupling is not None:
            ids[other_side(side)] = coupling.id_on(other_side(side))
        for source in ("bc", "dataverse"):
            if source not in ids or not m.allows(direction_of(source)):
                continue
            table = m.table(source)
            row = (
                named
                if source == side
                else (await self.apis[source].get_many(table, [ids[source]])).get(ids[source])
            )
            event = _as_read(source, table, ids[source], row, self.clock.now())
            result.records += 1
            await self._run(
                result, mapping, direction_of(source), "sync_now", [event], unconditional=True
            )
        return result

    async def couple_records(
        self,
        mapping: str,
        side: Side,
        record_ids: Sequence[str],
        *,
        create_new: bool = False,
        sync_after: bool = False,
    ) -> ActionResult:
        """BC's match-based coupling of selected records of ``side``: each
        uncoupled one is coupled to the one uncoupled record of the other side
        its match fields find, as a coupling run does, in a coupling job of its
        own. ``RecordNotFound`` names the ids ``side`` does not have, before
        anything is done."""
        m = self.mappings.get(mapping)
        table = m.table(side)
        rows = await self.apis[side].get_many(table, list(record_ids))
        missing = [rid for rid in record_ids if rid not in rows]
        if missing:
            raise RecordNotFound(side, table, ", ".join(missing))
        now = self.clock.now()
        events = [_as_read(side, table, rid, rows[rid], now) for rid in record_ids]
        result = ActionResult("couple_by_match", records=len(events))
        await self._run(
            result,
            mapping,
            direction_of(side),
            "couple_by_match",
            events,
            coupling=(create_new, sync_after),
        )
        return result

    # restore and delete the surviving record

    async def restore(self, selection: Selection) -> ActionResult:
        """Re-creates the deleted record of each selected coupling from the
        surviving side, and couples the new record."""
        return await self._on_deleted(selection, "restore", "restore")

    async def delete_records(self, selection: Selection) -> ActionResult:
        """Deletes the surviving record of each selected coupling whose other record is gone."""
        return await self._on_deleted(selection, "delete", "delete_records")

    async def _on_deleted(
        self, selection: Selection, policy: DeletionPolicy, action: str
    ) -> ActionResult:
        couplings = await self.problems.couplings(selection, deleted_only=True)
        result = ActionResult(action, records=len(couplings))
        groups: dict[tuple[str, Side], list[Coupling]] = defaultdict(list)
        for c in couplings:
            gone: Side = "bc" if c.bc_deleted else "dataverse"
            groups[(c.mapping, gone)].append(c)
        for (mapping, gone), group in groups.items():
            if mapping not in self.mappings:
                continue
            table = self.mappings.get(mapping).table(gone)
            now = self.clock.now()
            events = [RecordChanged(gone, table, c.id_on(gone), "delete", now, now) for c in group]
            overridden = _with_policy(
                self.mappings, mapping, policy, any_direction=policy == "delete"
            )
            # restore writes the gone side, delete-records the surviving one.
            writes: Side = gone if policy == "restore" else other_side(gone)
            await self._run(
                result, mapping, direction_of(other_side(writes)), action, events, overridden
            )
        return result

    # couplings

    async def delete_couplings(self, selection: Selection) -> ActionResult:
        """Removes the selected couplings; neither record is changed."""
        couplings = await self.problems.couplings(selection)
        result = ActionResult("delete_couplings", records=len(couplings))
        by_mapping: dict[str, list[Coupling]] = defaultdict(list)
        for c in couplings:
            by_mapping[c.mapping].append(c)
        for mapping, group in by_mapping.items():
            claim = await self._claim_coupled(mapping, [("bc", c.bc_id) for c in group])
            try:
                effects = BatchEffects(mapping)
                effects.uncoupled.extend(group)
                await self._uncoupling(result, mapping, effects, group, "bc", claim)
            finally:
                await claim.release()
        return result

    async def couple(self, coupling: Coupling) -> None:
        """Couples a pair, both records and what each is coupled to now
        claimed: an apply instance deciding either record (creating its
        counterpart, say) finishes first, and the check that neither is coupled
        to another record is made on what it committed. ``AlreadyCoupled`` then."""
        mapping = coupling.mapping
        ids: dict[Side, str] = {"bc": coupling.bc_id, "dataverse": coupling.dv_id}
        claim = await self._claim_coupled(mapping, list(ids.items()))
        try:
            for side, record_id in ids.items():
                other = other_side(side)
                existing = await self.stores.couplings.get(mapping, side, record_id)
                if existing is not None and existing.id_on(other) != ids[other]:
                    raise AlreadyCoupled(mapping, side, record_id, other, existing.id_on(other))
            effects = BatchEffects(mapping, couplings=[(coupling, None)])
            await self.state.commit(effects, claim=claim.proof())
        finally:
            await claim.release()

    async def uncouple(self, mapping: str, side: Side, record_id: str) -> Coupling | None:
        """Removes the coupling of one record, as delete-couplings does, in an
        uncoupling job of its own; None (and no job) when it had none."""
        claim = await self._claim_coupled(mapping, [(side, record_id)])
        try:
            removed = await self.stores.couplings.uncouple(mapping, side, record_id)
        finally:
            await claim.release()
        if removed is not None:
            # Removed above in one statement, so a coupling replaced meanwhile
            # is never the one taken; the job only counts it.
            await self._uncoupling(
                ActionResult("uncouple"), mapping, BatchEffects(mapping), [removed], side
            )
        return removed

    async def _uncoupling(
        self,
        result: ActionResult,
        mapping: str,
        effects: BatchEffects,
        couplings: Sequence[Coupling],
        named: Side,
        claim: PairClaim | None = None,
    ) -> None:
        """Counts and logs the removal of ``couplings`` (each logged as a
        decision on its record of the side ``named``) in an uncoupling job."""
        job_id = await self._job(mapping, "to_integration", result.action, "uncoupling")
        now = self.clock.now()
        for c in couplings:
            about = _decided(c, named, now, f"coupling removed by {result.action}")
            effects.count(job_id, ACTION_TOPIC, 0, "uncoupled", about=about)
        await self.state.commit(effects, claim=claim.proof() if claim else None)
        removed = len(couplings)
        noun = "coupling" if removed == 1 else "couplings"
        await self.jobs.finish_job(job_id, message=f"{removed} {noun} removed")
        result.jobs.append(job_id)
        result.counts["uncoupled"] += removed

    async def find_deleted(self, mapping: str | None = None) -> ActionResult:
        """Flags the couplings whose record no longer exists on either side, so
        they show in the errors list for restore, delete-records or uncouple."""
        result = ActionResult("find_deleted")
        names = [mapping] if mapping else list(self.mappings.names())
        couplings_store = self.stores.couplings
        for name in names:
            m = self.mappings.get(name)
            for side in ("bc", "dataverse"):
                started = self.clock.now()
                coupled = await couplings_store.all_ids(name, side, coupled_before=started)
                if not coupled:
                    continue
                present: set[str] = set()
                async for ids in self.apis[side].read_ids(m.table(side)):
                    present.update(ids)
                gone = coupled - present
                flagged: list[Coupling] = []
                for record_id in sorted(gone):
                    c = await couplings_store.get(name, side, record_id)
                    if c is not None and await self.problems.flag_deleted(c, side):
                        flagged.append(c)
                        await self._list_deleted(c, side, m.table(side))
                found = len(flagged)
                job_id = await self._job(name, direction_of(side), "find_deleted", "coupling")
                effects = BatchEffects(name)
                now = self.clock.now()
                for c in flagged:
                    about = _decided(c, side, now, "the coupled record no longer exists")
                    effects.count(job_id, ACTION_TOPIC, 0, "deleted", about=about)
                await self.state.commit(effects)
                await self.jobs.finish_job(job_id, message=f"{found} coupled records deleted")
                result.jobs.append(job_id)
                result.counts["deleted"] += found
                result.records += found
        return result

    async def _list_deleted(self, c: Coupling, side: Side, table: str) -> None:
        now = self.clock.now()
        event = RecordChanged(side, table, c.id_on(side), "delete", now, now)
        await self.problems.list_deleted(
            c,
            side,
            "the coupled record no longer exists; restore it, delete its counterpart, "
            "or remove the coupling",
            self.codec.encode(event),
        )

    # shared

    async def _claim_coupled(self, mapping: str, records: Sequence[PairKey]) -> PairClaim:
        """Claims ``records`` and the records coupled to them, as they are once held."""

        async def keys() -> set[PairKey]:
            found: set[PairKey] = set()
            for side, record_id in records:
                found.add((side, record_id.lower()))
                c = await self.stores.couplings.get(mapping, side, record_id)
                if c is not None:
                    other = other_side(side)
                    found.add((other, c.id_on(other).lower()))
            return found

        return await claim_stable(self.claims, mapping, keys, wait_s=self.settings.claim_wait_s)

    async def _job(
        self,
        mapping: str,
        direction: Direction,
        kind: str,
        job_type: str,
        *,
        unconditional: bool = False,
        create_unmatched: bool = False,
        sync_after: bool = False,
    ) -> str:
        job_id = str(uuid.uuid4())
        await self.jobs.create_job(
            job_id,
            run_id=None,
            mapping=mapping,
            direction=direction,
            kind=kind,
            job_type=job_type,
            ignore_only_coupled=True,
            unconditional=unconditional,
            create_unmatched=create_unmatched,
            sync_after=sync_after,
        )
        return job_id

    async def _run(
        self,
        result: ActionResult,
        mapping: str,
        direction: Direction,
        action: str,
        events: Sequence[RecordChanged],
        mappings: MappingSet | None = None,
        *,
        unconditional: bool = False,
        coupling: tuple[bool, bool] | None = None,
    ) -> None:
        """``coupling``: a match-based coupling's (create_unmatched, sync_after)."""
        create_unmatched, sync_after = coupling or (False, False)
        job_id = await self._job(
            mapping,
            direction,
            action,
            "coupling" if coupling else "synchronization",
            unconditional=unconditional,
            create_unmatched=create_unmatched,
            sync_after=sync_after,
        )
        # Everything an action does counts in its own job, as in BC.
        context = JobContext(
            job_id=job_id,
            kind=action,
            ignore_only_coupled=True,
            unconditional=unconditional,
            coupling_run=coupling is not None,
            create_unmatched=create_unmatched,
            sync_after=sync_after,
        )
        applier = Applier(
            mapping,
            mappings or self.mappings,
            self.apis,
            self.stores.couplings,
            self.state,
            JobEnsurer(mapping, self.jobs.continuous_job),
            self.settings,
            self.clock,
        )
        items = [Item(e, self.codec.encode(e), context, ACTION_TOPIC, 0) for e in events]
        size = self.settings.apply_batch_size
        # In batches no larger than apply's, each claimed while it is decided.
        for start in range(0, len(items), size):
            await apply_claimed(
                applier,
                self.claims,
                self.state,
                items[start : start + size],
                wait_s=self.settings.claim_wait_s,
            )
        await self.jobs.finish_job(job_id)
        totals = await self.jobs.totals(job_id)
        if totals is not None:
            result.counts.update({k: v for k, v in totals.counts.items() if v})
        result.jobs.append(job_id)
        log.info(
            "action_performed",
            action=action,
            mapping=mapping,
            direction=direction,
            records=len(items),
            job_id=job_id,
        )


def _decided(c: Coupling, side: Side, now: datetime, message: str) -> Decided:
    """The record log's words of an action on the record of ``c`` on ``side``
    that writes to neither side."""
    return Decided(side, c.id_on(side), now, c.id_on(other_side(side)), c.company, message=message)


def _as_read(
    side: Side, table: str, record_id: str, row: Row | None, now: datetime
) -> RecordChanged:
    """The record as it was just read, as capture would publish it: its
    deletion when it was not found."""
    if row is None:
        return RecordChanged(side, table, record_id, "delete", now, now)
    return RecordChanged(
        side,
        table,
        record_id,
        "upsert",
        row.modified_at,
        now,
        row.fields,
        row.etag,
        row.modified_by,
    )


def _with_policy(
    mappings: MappingSet, name: str, policy: DeletionPolicy, *, any_direction: bool
) -> MappingSet:
    """The mappings with one mapping's deletion policy set for this action."""

    def adjusted(m: TableMapping) -> TableMapping:
        if m.name != name:
            return m
        return replace(
            m, deletion=policy, direction="bidirectional" if any_direction else m.direction
        )

    return MappingSet(tuple(adjusted(m) for m in mappings.mappings))
