"""Applies a batch of changes of one mapping: read the facts the rules need
(``runtime.facts``), decide with ``tablesync.core``, write to the sides
(``runtime.writes``), and collect the effects for one state-database
transaction.

The order of effects is what keeps the invariants: creates are announced as
intents (committed) before the destination API is called; destination
writes happen before couplings, counters and positions are committed; the
caller commits Kafka offsets last."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from tablesync.core.counting import (
    Performed,
    Record,
    continuous_job_id,
    counted_towards,
    counts_made_pair,
    interval_start,
    record,
    run_job,
)
from tablesync.core.couplings import Coupling
from tablesync.core.decision import Facts, decide
from tablesync.core.effects import BatchEffects, DueRecord, Intent
from tablesync.core.events import Direction, RecordChanged, RecordFailed, Side, other_side
from tablesync.core.fieldmap import LookupKey
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
from tablesync.core.outcome import MAX_ROUNDS, kept_changing
from tablesync.core.plan import Unchanged, triage
from tablesync.core.retry import RetryPolicy
from tablesync.errors import ClaimsBusy
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaim, PairKey
from tablesync.ports.clock import Clock
from tablesync.ports.state import ApplyState, Couplings
from tablesync.runtime.facts import Reader
from tablesync.runtime.locks import KeyedLocks
from tablesync.runtime.together import together
from tablesync.runtime.work import Item, Scope, Work
from tablesync.runtime.writes import Writer
from tablesync.settings import SyncSettings

__all__ = ["RETRY_TOPIC", "Applier", "Item", "JobEnsurer", "continuous_job_id"]

log = structlog.get_logger()

RETRY_TOPIC = "(retry)"


class Applier:
    """The rules of one mapping, performed against the sides and the state database."""

    def __init__(
        self,
        mapping_name: str,
        mappings: MappingSet,
        apis: dict[Side, SideApi],
        couplings: Couplings,
        state: ApplyState,
        ensure_job: JobEnsurer,
        settings: SyncSettings,
        clock: Clock,
        *,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._scope = Scope(mapping_name, mappings, apis, couplings, state, clock)
        if new_id is not None:
            self._scope.new_id = new_id
        self.ensure_job = ensure_job
        self.settings = settings
        self.clock = clock
        self.failures: list[RecordFailed] = []
        self._reader = Reader(self._scope)
        self._writer = Writer(self._scope)
        # The two records of a coupling live on two partitions, applied side
        # by side: one pair is decided by one of them at a time.
        self._pairs: KeyedLocks[tuple[Side, str]] = KeyedLocks()

    @property
    def mapping_name(self) -> str:
        return self._scope.mapping_name

    @property
    def mappings(self) -> MappingSet:
        return self._scope.mappings

    @property
    def mapping(self) -> TableMapping:
        return self._scope.mapping

    def reload(self, mappings: MappingSet) -> None:
        self._scope.mappings = mappings

    async def claim_keys(self, items: Sequence[Item]) -> set[PairKey]:
        """The records ``items`` decide about, as the state database has them
        now: their own and their coupled counterparts (what a claim must hold)."""
        keys: set[PairKey] = set()
        for chunk in _unique_chunks(items):
            couplings = await self._reader.load_couplings(chunk, BatchEffects(self.mapping_name))
            keys |= _pair_keys(chunk, couplings)
        return keys

    async def apply(
        self, items: Sequence[Item], effects: BatchEffects, claim: PairClaim | None = None
    ) -> None:
        """Applies ``items`` in order; a record appears at most once per round.
        With ``claim``, every pair decided is in it (extended where the batch
        coupled new ones); a pair another instance holds ends the batch with
        ``ClaimsBusy``, to be applied again from the start."""
        effects.deletions_read |= _deletions(items)
        for chunk in _unique_chunks(items):
            await self._apply_chunk(chunk, effects, claim)

    async def apply_side_by_side(
        self,
        groups: Sequence[Sequence[Item]],
        effects: BatchEffects,
        claim: PairClaim | None = None,
    ) -> None:
        """Applies each group (a partition's events, in order) beside the others,
        into one batch's effects. A record's events are all in one group, but
        the two records of a coupling are in two: each chunk holds its pairs
        while it decides, writes and records them, and one that waited sees
        what the other made of the pair (in ``effects``) before deciding."""
        for group in groups:
            effects.deletions_read |= _deletions(group)
        if len(groups) <= 1:
            for group in groups:
                await self.apply(group, effects, claim)
            return
        await together(*(self.apply(group, effects, claim) for group in groups))

    async def sources_of(self, intents: Sequence[Intent]) -> list[RecordChanged]:
        """The sources of intents an attempt that died left open, as they are
        now: a version to apply again, or a deletion when the source is gone.
        An intent whose source is coupled by now was settled already; it is
        resolved here."""
        return await self._reader.sources_of(intents)

    async def _apply_chunk(
        self, items: list[Item], effects: BatchEffects, claim: PairClaim | None
    ) -> None:
        couplings = await self._reader.load_couplings(items, effects)
        held: set[tuple[Side, str]] = set()
        try:
            while not (wanted := _pair_keys(items, couplings)) <= held:
                # Read again once held: the group that held a pair before may
                # have coupled, updated or removed it meanwhile.
                self._pairs.release(held)
                held = set()
                await self._pairs.acquire(wanted)
                held = wanted
                couplings = await self._reader.load_couplings(items, effects)
            if claim is not None and not wanted <= claim.keys:
                # Pairs coupled since the claim was taken (by this batch, or
                # by an instance that held them then): claimed without waiting.
                missing = wanted - claim.keys
                if not await claim.extend(missing):
                    raise ClaimsBusy(self.mapping_name, len(missing), 0.0)
            await self._decide_and_write(items, couplings, effects)
        finally:
            self._pairs.release(held)

    async def _decide_and_write(
        self, items: list[Item], couplings: list[Coupling | None], effects: BatchEffects
    ) -> None:
        mapping = self.mapping
        statuses = await self._reader.load_statuses(items)
        if any(item.retry is not None for item in items):
            kept = [_current(item, statuses) for item in items]
            items = [item for item, keep in zip(items, kept, strict=True) if keep]
            couplings = [c for c, keep in zip(couplings, kept, strict=True) if keep]
        deleted = await self._reader.load_deleted(items, couplings, effects)
        work: list[Work] = []
        for item, coupling in zip(items, couplings, strict=True):
            event = item.event
            if (event.side, event.record_id) in deleted:
                # A late or replayed version of a record deleted since: never
                # created again on the other side, counted like any replay.
                facts = Facts(event, Unchanged(), coupling, tombstoned=True)
            else:
                facts = Facts(event, triage(event, mapping, item.job, coupling), coupling)
            work.append(Work(item, facts))
        await self._reader.fetch(work, effects)
        resolved = await self._reader.resolve_lookups(work)
        for w in work:
            w.done = self._decide(w, resolved)
        pending = work
        for _ in range(MAX_ROUNDS):
            pending = await self._writer.write(pending, effects.epochs, effects.announced)
            if not pending:
                break
            await self._reader.fetch_destinations(pending, effects.announced)
            for w in pending:
                w.done = self._decide(w, resolved)
        for w in pending:
            w.done = replace(w.performed, decision=kept_changing())
        await self._writer.write_back(work, effects.epochs)
        for w in work:
            await self._record(w, effects, statuses.get((w.event.side, w.event.record_id)))

    def _decide(self, w: Work, resolved: dict[LookupKey, str]) -> Performed:
        decided = decide(self.mapping, self.mappings, w.facts, resolved)
        return Performed(decided.decision, decided.mapped)

    async def _record(self, w: Work, effects: BatchEffects, status: DueRecord | None) -> None:
        item, facts, done = w.item, w.facts, w.performed
        event = item.event
        job_id = await self._job_for(item, counted_towards(done.decision, event.side))
        now = self.clock.now()
        made_in = None
        if counts_made_pair(facts, done.decision):
            # The interrupted create happened: counted with the pair's coupling,
            # in the job of the direction it was made (a restore writes back).
            made_in = await self._job_for(item, direction_of(event.side))
        policy = RetryPolicy(
            self.settings.skip_after_failures,
            self.settings.retry_backoff_s,
            self.settings.retry_backoff_max_s,
        )
        recorded = record(
            self.mapping,
            facts,
            done,
            status,
            job_id=job_id,
            made_in=made_in,
            policy=policy,
            now=now,
            retry=item.retry is not None,
            raw=item.raw,
        )
        self._add(recorded, item, effects)
        # Ids and outcome only: field values stay out of the logs.
        log.debug(
            "record_decided",
            mapping=self.mapping_name,
            side=event.side,
            record_id=event.record_id,
            offset=item.offset,
            decision=type(done.decision).__name__,
            written_before=facts.announced.before or None,
            written_here=bool(facts.written_here) or None,
            announced_create=(facts.intent is not None) or None,
            recovered=facts.created_before.id if facts.created_before else None,
        )

    def _add(self, r: Record, item: Item, effects: BatchEffects) -> None:
        effects.couplings.extend(r.couplings)
        effects.uncoupled.extend(r.uncoupled)
        effects.deleted.extend(r.deleted)
        effects.resolved_intents.extend(r.resolved_intents)
        effects.resolved_writes.extend(r.resolved_writes)
        effects.cleared.extend(r.cleared)
        if r.status is not None:
            effects.statuses.append(r.status)
        if r.error is not None:
            effects.errors.append(r.error)
        if r.failure is not None:
            self.failures.append(r.failure)
        r.count_in(effects, item.topic, item.partition, recovered_topic=RETRY_TOPIC)

    async def _job_for(self, item: Item, direction: Direction) -> str:
        job_id = run_job(item.job, direction)
        if job_id is not None:
            return job_id
        start = interval_start(self.clock.now(), self.settings.continuous_job_interval_s)
        job_id = continuous_job_id(self.mapping_name, direction, start)
        await self.ensure_job(job_id, direction, start)
        return job_id


CreateContinuousJob = Callable[[str, str, str, datetime], Awaitable[None]]


class JobEnsurer:
    """Makes sure the continuous job row of an interval exists, once per process."""

    def __init__(self, mapping: str, create: CreateContinuousJob) -> None:
        self._mapping = mapping
        self._create = create
        self._known: set[str] = set()

    async def __call__(self, job_id: str, direction: Direction, start: datetime) -> None:
        if job_id in self._known:
            return
        await self._create(job_id, self._mapping, direction, start)
        self._known.add(job_id)
        if len(self._known) > 1000:
            self._known = {job_id}


def _pair_keys(items: Iterable[Item], couplings: Iterable[Coupling | None]) -> set[PairKey]:
    """The records a chunk decides about: its own, and their counterparts."""
    keys: set[PairKey] = set()
    for item, coupling in zip(items, couplings, strict=True):
        event = item.event
        keys.add((event.side, event.record_id.lower()))
        if coupling is not None:
            dest = other_side(event.side)
            keys.add((dest, coupling.id_on(dest).lower()))
    return keys


def _deletions(items: Iterable[Item]) -> set[tuple[Side, str]]:
    return {(i.event.side, i.event.record_id.lower()) for i in items if i.event.op == "delete"}


def _unique_chunks(items: Iterable[Item]) -> list[list[Item]]:
    """Splits ``items`` so no record appears twice in a chunk, order kept."""
    chunks: list[list[Item]] = [[]]
    seen: set[tuple[Side, str]] = set()
    for item in items:
        key = (item.event.side, item.event.record_id)
        if key in seen:
            chunks.append([])
            seen = set()
        chunks[-1].append(item)
        seen.add(key)
    return [c for c in chunks if c]


def _current(item: Item, statuses: Mapping[tuple[Side, str], DueRecord]) -> bool:
    """Whether a retry is still of the record's listing as it is now, read
    under the batch's claim: a listing replaced since the retry was taken
    (a newer version listed by another batch) or cleared (synced by one) is
    decided there, and deciding the older version here would list it over
    the newer one."""
    if item.retry is None:
        return True
    now = statuses.get((item.event.side, item.event.record_id))
    return now is not None and now.event == item.retry.event
