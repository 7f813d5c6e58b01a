"""Reads the facts the rules need about a chunk's records: their couplings,
retry statuses and known deletions, the coupled counterparts as they are now,
match candidates, the records interrupted creates made, and the writes that
attempts which did not commit announced. What the facts mean is decided in
``tablesync.core`` (``recovery``, ``matching``, ``decision``); this module
asks the sides and the state database, many records at a time.

A read a side refuses for what it asks (``runtime.refused``) is narrowed
down to the records it refuses; those fail with the side's reason, the
others are decided on what was read."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import structlog

from tablesync.core.couplings import Coupling
from tablesync.core.decision import event_of, lookups_needed
from tablesync.core.effects import (
    BatchEffects,
    DueRecord,
    Intent,
    WriteTarget,
    blocking,
    made_so_far,
)
from tablesync.core.events import RecordChanged, Side, other_side
from tablesync.core.fieldmap import LookupKey
from tablesync.core.mappings import TableMapping
from tablesync.core.matching import best_matches, match_chunks, match_query, match_values
from tablesync.core.plan import FetchCandidates, FetchDestination, Ignore
from tablesync.core.records import Row
from tablesync.core.recovery import (
    Check,
    announced_pair,
    destination_checks,
    found_announced,
    gone_check,
    made_records,
    made_then_gone,
    recent_query,
    sent_by,
)
from tablesync.errors import ReadRefused
from tablesync.runtime.refused import narrowed, refusal_message
from tablesync.runtime.together import together
from tablesync.runtime.work import Item, Scope, Work

__all__ = ["Reader"]

log = structlog.get_logger()

_SIDES: tuple[Side, Side] = ("bc", "dataverse")


class Reader:
    """Gathers the facts of one mapping's records."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @property
    def mapping_name(self) -> str:
        return self.scope.mapping_name

    async def load_couplings(
        self, items: Sequence[Item], effects: BatchEffects
    ) -> list[Coupling | None]:
        """The couplings of the chunk's records, as the batch has left them so far:
        an earlier chunk's couplings are not committed yet, but they are made."""
        made = made_so_far(effects)
        found: list[Coupling | None] = [None] * len(items)
        for side in _SIDES:
            ids = [i.event.record_id for i in items if i.event.side == side]
            stored = await self.scope.couplings.by_ids(self.mapping_name, side, ids)
            for n, item in enumerate(items):
                record = (item.event.side, item.event.record_id)
                if record[0] == side:
                    found[n] = made[record] if record in made else stored.get(record[1])
        return found

    async def load_deleted(
        self,
        items: Sequence[Item],
        couplings: Sequence[Coupling | None],
        effects: BatchEffects,
    ) -> set[tuple[Side, str]]:
        """Of the chunk's uncoupled records, those known to be deleted."""
        uncoupled = [
            (i.event.side, i.event.record_id)
            for i, c in zip(items, couplings, strict=True)
            if c is None and i.event.op == "upsert"
        ]
        if not uncoupled:
            return set()
        known = await self.scope.state.deleted_among(self.mapping_name, uncoupled)
        return known | (set(effects.deleted) & set(uncoupled))

    async def load_statuses(self, items: Sequence[Item]) -> dict[tuple[Side, str], DueRecord]:
        found: dict[tuple[Side, str], DueRecord] = {}
        for side in _SIDES:
            ids = [i.event.record_id for i in items if i.event.side == side]
            statuses = await self.scope.state.statuses_of(self.mapping_name, side, ids)
            for sid, status in statuses.items():
                found[(side, sid)] = status
        return found

    async def fetch(self, work: list[Work], effects: BatchEffects | None = None) -> None:
        """What the rules need about ``work``; ``effects``: the batch's so far, whose
        deletions (read and recorded) count as seen before they are committed."""
        await self._named_deletions(work)
        await self._sources_gone(work)
        coupled_here = _coupled_here(effects)
        await self._settle_announced(
            [
                w
                for w in work
                if w.facts.coupling is None
                and not isinstance(w.facts.triage, FetchCandidates)
                # Coupled by this batch, and uncoupled since: the create it
                # announced is the batch's own, settled (and counted) then.
                and (w.event.side, w.event.record_id.lower()) not in coupled_here
            ]
        )
        uncoupled = [w for w in work if isinstance(w.facts.triage, FetchCandidates)]
        if uncoupled:
            await self._recover_uncoupled(uncoupled, _seen_deleted(effects))
        await self.fetch_destinations(work, effects.announced if effects else ())
        still = [
            w
            for w in uncoupled
            if isinstance(w.facts.triage, FetchCandidates) and w.facts.refused is None
        ]
        if still:
            await self._fetch_candidates(still)

    async def _sources_gone(self, work: list[Work]) -> None:
        """Changes of uncoupled records that would be created on the other side,
        whose record is gone by now: never created. A record created and deleted
        before capture took its first delta link has no deletion to come after
        its create; and an old version replayed after a deletion is not a record
        any more. A snapshot's rows were just read: their creates go ahead."""
        for side in _SIDES:
            group = [
                w
                for w in work
                if w.event.side == side
                and w.event.snapshot_job_id is None
                and w.event.op != "delete"
                and isinstance(w.facts.triage, FetchCandidates)
            ]
            if not group:
                continue
            ids = sorted({w.event.record_id for w in group})
            present, refused = await self._read_ids(side, ids)
            # A read the side refuses finds nothing gone: the create decides.
            there = {rid.lower() for rid in (*present, *refused)}
            for w in group:
                if w.event.record_id.lower() not in there:
                    # Its own announced create, if any, is settled as that of
                    # any record decided without a create.
                    w.facts = replace(
                        w.facts,
                        triage=Ignore("the record was deleted since this version"),
                        source_gone=True,
                    )

    async def _named_deletions(self, work: list[Work]) -> None:
        """Deletions of uncoupled records that an open create of the other side
        names: made by a create whose answer has not been recorded yet (another
        attempt's, perhaps lost). Marked ``blocked``: the deletion is kept as
        seen, and that create, settled later, finds its record made and gone."""
        for side in _SIDES:
            group = [
                w
                for w in work
                if w.event.side == side and w.event.op == "delete" and w.facts.coupling is None
            ]
            if not group:
                continue
            named = await self.scope.state.named_by_intents(
                self.mapping_name, other_side(side), [w.event.record_id for w in group]
            )
            for w in group:
                if w.event.record_id in named:
                    w.facts = replace(w.facts, blocked=True)

    async def fetch_destinations(self, work: list[Work], own: Collection[WriteTarget] = ()) -> None:
        """The coupled records of the other side as they are now, and the
        writes to them (or to the records themselves) that were announced;
        ``own``: those the batch announced itself (``BatchEffects.announced``)."""
        wanted: dict[Side, set[str]] = {"bc": set(), "dataverse": set()}
        for w in work:
            if isinstance(t := w.facts.triage, FetchDestination):
                wanted[t.side].add(t.record_id)
        rows, refused = await self._get_many(wanted)
        for w in work:
            if isinstance(t := w.facts.triage, FetchDestination) and (
                why := refused.get((t.side, t.record_id))
            ):
                w.facts = replace(w.facts, refused=refusal_message(why))
        await self._load_written_here(work)
        checked: list[tuple[Work, tuple[Check, ...]]] = []
        for w in work:
            if isinstance(t := w.facts.triage, FetchDestination) and w.facts.refused is None:
                destination = rows.get((t.side, t.record_id))
                changed, checks = destination_checks(
                    w.event, t, destination, deleting=w.facts.deleting
                )
                w.facts = replace(w.facts, destination=destination, destination_changed=changed)
                checked.append((w, checks))
        keys = [key for _, checks in checked for key, _ in checks]
        if keys:
            ours = await self.scope.state.announced_writes(self.mapping_name, keys)
            for w, checks in checked:
                announced = found_announced(
                    w.facts.announced, checks, ours, deleting=w.facts.deleting, own=own
                )
                w.facts = replace(w.facts, announced=announced)

    async def _load_written_here(self, work: list[Work]) -> None:
        """For versions of coupled records, what updates of those very records
        that an attempt announced and did not commit would have left on them:
        a version read back after such a write is (at least partly) its echo."""
        fresh = [
            w for w in work if isinstance(w.facts.triage, FetchDestination) and not w.facts.deleting
        ]
        found = await self.scope.state.written_images(
            self.mapping_name, [(w.event.side, w.event.record_id) for w in fresh]
        )
        for w in fresh:
            images = found.get((w.event.side, w.event.record_id))
            if images is not None:
                w.facts = replace(w.facts, written_here=tuple(images))

    async def _get_many(
        self, wanted: dict[Side, set[str]]
    ) -> tuple[dict[tuple[Side, str], Row], dict[tuple[Side, str], ReadRefused]]:
        """The records of each side by id, and the ids whose read a side refused."""

        async def one(
            side: Side, ids: set[str]
        ) -> tuple[dict[tuple[Side, str], Row], dict[tuple[Side, str], ReadRefused]]:
            found, refused = await self._read_ids(side, sorted(ids))
            return (
                {(side, rid): row for rid, row in found.items()},
                {(side, rid): why for rid, why in refused.items()},
            )

        merged: dict[tuple[Side, str], Row] = {}
        refusals: dict[tuple[Side, str], ReadRefused] = {}
        for rows, refused in await together(*(one(s, ids) for s, ids in wanted.items())):
            merged.update(rows)
            refusals.update(refused)
        return merged, refusals

    async def _read_ids(
        self, side: Side, ids: Sequence[str]
    ) -> tuple[dict[str, Row], dict[str, ReadRefused]]:
        """``get_many`` of ``ids`` on ``side``, narrowed to the ids it refuses."""
        if not ids:
            return {}, {}
        api, table = self.scope.apis[side], self.scope.mapping.table(side)

        async def read(chunk: Sequence[str]) -> dict[str, Row]:
            return await api.get_many(table, list(chunk))

        parts, refused = await narrowed(ids, read, mapping=self.mapping_name, read="get_many")
        found: dict[str, Row] = {}
        for part in parts:
            found.update(part)
        return found, refused

    async def _recover_uncoupled(
        self, work: list[Work], seen: frozenset[tuple[Side, str]] = frozenset()
    ) -> None:
        """Uncoupled records' own announced creates, the records those made,
        and the creates of the other side that may be making these records."""
        mapping = self.scope.mapping
        for source in _SIDES:
            group = [w for w in work if w.event.side == source]
            if not group:
                continue
            dest = other_side(source)
            ids = [w.event.record_id for w in group]
            intents = await self.scope.state.intents_of(self.mapping_name, source, ids)
            # Creates from the other side that may have made these records.
            blocked = blocking(
                await self.scope.state.open_intents(self.mapping_name, dest, ids),
                [(w.event.record_id, w.event.fields) for w in group],
                key=mapping.bc_key if source == "bc" else None,
            )
            # Read after the intents: a create of the other side that made one
            # of these records and committed since the chunk read its couplings
            # (its intent resolved in the same commit) shows here. Such a record
            # is an echo of that create, decided again once its coupling is read.
            unblocked = [rid for rid in ids if rid not in blocked]
            if unblocked:
                blocked |= await self.scope.couplings.coupled_among(
                    self.mapping_name, source, unblocked
                )
            for w in group:
                rid = w.event.record_id
                w.facts = replace(w.facts, intent=intents.get(rid), blocked=rid in blocked)
            await self._recover_created(mapping, dest, [w for w in group if w.facts.intent])
            unanswered = [
                (dest, intent.dest_id)
                for w in group
                if (intent := w.facts.intent) is not None
                and intent.dest_id is not None
                and not intent.made
                and w.facts.created_before is None
            ]
            seen_deleted = {k for k in unanswered if (k[0], k[1].lower()) in seen} | (
                await self.scope.state.deleted_among(self.mapping_name, unanswered)
                if unanswered
                else set()
            )
            for w in group:
                intent = w.facts.intent
                gone = intent is not None and (dest, intent.dest_id or "") in seen_deleted
                if intent is None or not made_then_gone(
                    intent, w.facts.created_before, seen_deleted=gone
                ):
                    continue
                # Made, then deleted before its pair was recorded: the pair is
                # decided like any coupled pair whose counterpart was deleted.
                pair = announced_pair(mapping, w.event, intent, None, gone=True)
                if pair is not None:
                    triage = FetchDestination(dest, pair.id_on(dest), pair)
                    w.facts = replace(w.facts, coupling=pair, paired=True, triage=triage)

    async def _fetch_candidates(self, work: list[Work]) -> None:
        mapping = self.scope.mapping
        for source in _SIDES:
            group = [w for w in work if w.event.side == source]
            if not group:
                continue
            dest = other_side(source)
            if mapping.match:
                await self._match(
                    mapping, source, dest, [w for w in group if not w.facts.created_before]
                )
            await self._load_written_there(dest, [w for w in group if w.facts.intent])

    async def _load_written_there(self, dest: Side, work: list[Work]) -> None:
        """What tablesync's own updates left on the records these records'
        creates made: not a user's edit of them."""
        made = [
            (w, row.id)
            for w in work
            if (row := w.facts.created_before or _only(w.facts.candidates)) is not None
        ]
        if not made:
            return
        found = await self.scope.state.written_images(
            self.mapping_name, [(dest, rid) for _, rid in made]
        )
        for w, rid in made:
            images = found.get((dest, rid))
            if images:
                w.facts = replace(
                    w.facts, written_there=tuple(images), written_there_by=(dest, rid, "update")
                )

    async def _settle_announced(self, work: list[Work]) -> None:
        """Uncoupled records decided without a create (deleted since, out of the
        filter) whose own create was announced: that create's record, if it was
        made, is found and coupled; the intent is resolved either way, so it
        holds back no record of the other side any longer."""
        mapping = self.scope.mapping
        for source in _SIDES:
            group = [w for w in work if w.event.side == source]
            if not group:
                continue
            ids = [w.event.record_id for w in group]
            intents = await self.scope.state.intents_of(self.mapping_name, source, ids)
            if not intents:
                continue
            announced = [w for w in group if w.event.record_id in intents]
            for w in announced:
                w.facts = replace(w.facts, intent=intents[w.event.record_id])
            dest = other_side(source)
            await self._recover_created(mapping, dest, announced)
            deleting = [
                (w, intent, gone_check(intent, w.facts.created_before, dest))
                for w in announced
                if w.facts.deleting and (intent := w.facts.intent) is not None
            ]
            # Found gone, but named and announced as deleted: an attempt that
            # settled this very intent deleted it and died before its commit.
            gone_ours = await self.scope.state.announced_writes(
                self.mapping_name, [gone for _, _, gone in deleting if gone is not None]
            )
            for w, intent, gone in deleting:
                # Or made (the side answered) and not found: deleted since, by
                # a user; the pair was made all the same, and both are gone.
                made_gone = made_then_gone(intent, w.facts.created_before)
                pair = announced_pair(
                    mapping,
                    w.event,
                    intent,
                    w.facts.created_before,
                    gone=gone in gone_ours or made_gone,
                )
                if pair is None:
                    continue
                # The pair the create made, decided like any coupled pair one
                # of whose records was deleted (the deletion policy applies).
                triage = FetchDestination(dest, pair.id_on(dest), pair)
                w.facts = replace(w.facts, coupling=pair, paired=True, triage=triage)

    async def _recover_created(self, mapping: TableMapping, dest: Side, work: list[Work]) -> None:
        """Finds the records that creates of these very records made before a crash."""
        if not work:
            return
        by_id = {i.dest_id: w for w in work if (i := w.facts.intent) and i.dest_id}
        if by_id:
            found, refused = await self._read_ids(dest, sorted(by_id))
            for rid, row in found.items():
                by_id[rid].facts = replace(by_id[rid].facts, created_before=row)
            for rid, why in refused.items():
                by_id[rid].facts = replace(by_id[rid].facts, refused=refusal_message(why))
        unknown = [(w, i) for w in work if (i := w.facts.intent) and not i.dest_id]
        if not unknown:
            return
        # BC chose the id, and the crash lost it: the record is the one
        # created since the intent whose values are the ones we sent.
        api, table = self.scope.apis[dest], mapping.table(dest)

        async def read(part: Sequence[int]) -> list[Row]:
            return await api.find(table, recent_query(mapping, dest, [unknown[n][1] for n in part]))

        parts, unread = await narrowed(
            range(len(unknown)), read, mapping=self.mapping_name, read="recent creates"
        )
        for n, why in unread.items():
            w = unknown[n][0]
            w.facts = replace(w.facts, refused=refusal_message(why))
        asked = [pair for n, pair in enumerate(unknown) if n not in unread]
        recent = [row for part in parts for row in part]
        recent_ids = [r.id for r in recent]
        coupled = await self.scope.couplings.coupled_among(self.mapping_name, dest, recent_ids)
        named = await self.scope.state.named_by_intents(
            self.mapping_name, other_side(dest), recent_ids
        )
        sents = [sent_by(i, w.event, mapping, self.scope.mappings) for w, i in asked]
        for (w, _), made in zip(asked, made_records(sents, recent, coupled | named), strict=True):
            if made is not None:
                w.facts = replace(w.facts, created_before=made)

    async def _match(
        self, mapping: TableMapping, source: Side, dest: Side, work: list[Work]
    ) -> None:
        keyed = [
            (w, values)
            for w in work
            if (values := match_values(mapping, source, w.event.fields)) is not None
        ]
        chunks = match_chunks(mapping, dest, [values for _, values in keyed])
        await together(
            *(self._match_chunk(mapping, dest, [keyed[n] for n in chunk]) for chunk in chunks)
        )

    async def _match_chunk(
        self, mapping: TableMapping, dest: Side, chunk: list[tuple[Work, tuple[str, ...]]]
    ) -> None:
        api, table = self.scope.apis[dest], mapping.table(dest)

        async def read(part: Sequence[int]) -> list[Row]:
            return await api.find(table, match_query(mapping, dest, [chunk[n][1] for n in part]))

        parts, refused = await narrowed(
            range(len(chunk)), read, mapping=self.mapping_name, read="match"
        )
        for n, why in refused.items():
            w = chunk[n][0]
            w.facts = replace(w.facts, refused=refusal_message(why))
        rows = [row for part in parts for row in part]
        coupled = await self.scope.couplings.coupled_among(
            self.mapping_name, dest, [r.id for r in rows]
        )
        free = [r for r in rows if r.id not in coupled]
        for w, values in chunk:
            if w.facts.refused is None:
                candidates = best_matches(mapping, dest, free, values)
                w.facts = replace(w.facts, candidates=candidates)

    async def resolve_lookups(self, work: list[Work]) -> dict[LookupKey, str]:
        mapping = self.scope.mapping
        keys: set[LookupKey] = set()
        for w in work:
            keys |= lookups_needed(mapping, w.facts)
        return await self.scope.couplings.resolve(keys) if keys else {}

    async def sources_of(self, intents: Sequence[Intent]) -> list[RecordChanged]:
        """See ``Applier.sources_of``."""
        mapping = self.scope.mapping
        now = self.scope.clock.now()
        events: list[RecordChanged] = []
        for source in _SIDES:
            ids = [i.source_id for i in intents if i.source_side == source]
            if not ids:
                continue
            coupled = await self.scope.couplings.by_ids(self.mapping_name, source, ids)
            dest = other_side(source)
            for i in intents:
                c = coupled.get(i.source_id)
                if i.source_side == source and c and i.dest_id and c.id_on(dest) != i.dest_id:
                    # Coupled by another path (a match from the other side) to
                    # another record: the one this create made is left over.
                    log.warning(
                        "create_left_over",
                        mapping=self.mapping_name,
                        source_side=source,
                        source_id=i.source_id,
                        record_id=i.dest_id,
                        coupled_to=c.id_on(dest),
                    )
            await self.scope.state.resolve_intents(
                self.mapping_name, [(source, sid) for sid in ids if sid in coupled]
            )
            rest = [sid for sid in ids if sid not in coupled]
            table = mapping.table(source)
            found, refused = await self._read_ids(source, rest)
            for sid in rest:
                if sid in refused:
                    # Neither a version nor a deletion: its intent stays open,
                    # and is settled once the side serves the read.
                    continue
                row = found.get(sid)
                events.append(
                    event_of(row, source, table)
                    if row is not None
                    else RecordChanged(
                        side=source,
                        table=table,
                        record_id=sid,
                        op="delete",
                        modified_at=now,
                        captured_at=now,
                    )
                )
        return events


def _only(rows: Sequence[Row]) -> Row | None:
    return rows[0] if len(rows) == 1 else None


def _coupled_here(effects: BatchEffects | None) -> frozenset[tuple[Side, str]]:
    """The records (side, lower-case id) the batch has coupled so far."""
    if effects is None:
        return frozenset()
    return frozenset(
        record
        for c, _ in effects.couplings
        for record in (("bc", c.bc_id.lower()), ("dataverse", c.dv_id.lower()))
    )


def _seen_deleted(effects: BatchEffects | None) -> frozenset[tuple[Side, str]]:
    if effects is None:
        return frozenset()
    return frozenset(effects.deletions_read) | {(s, rid.lower()) for s, rid in effects.deleted}
