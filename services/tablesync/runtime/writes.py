"""Performs the writes of a chunk's decisions on the sides.

The order is what keeps "no duplicates" and "no lost edit": creates are
announced as intents, and updates and deletions of existing records as
write targets with the image each update leaves, and those announcements are
committed before a side is called. What a side's answer means is
``tablesync.core.outcome``'s to say."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

import structlog

from tablesync.adapters.transient import TRANSIENT
from tablesync.core.decision import write_back, write_back_lookups, writes_back
from tablesync.core.effects import Intent, WriteTarget
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import LookupKey, sent_values
from tablesync.core.mappings import TableMapping
from tablesync.core.outcome import (
    absorb,
    announces_create,
    first_unavailable,
    made_id,
    new_record_id,
    operation_of,
    write_side,
)
from tablesync.core.plan import Create, FetchDestination
from tablesync.core.records import Update as UpdateOp
from tablesync.core.records import WriteOp, WriteResult, Written
from tablesync.core.recovery import announced_before, announcing, image_of
from tablesync.runtime import faults
from tablesync.runtime.together import together
from tablesync.runtime.work import Scope, Work

__all__ = ["Writer"]

log = structlog.get_logger()

# Pauses between tries of keeping what the creates made. That answer is what
# tells a later attempt whether a record was made (and, gone by then, deleted
# since): it is kept through a short outage of the state database rather
# than lost with the batch.
_KEEP_MADE_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class Writer:
    """Writes one mapping's decisions to the sides."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @property
    def mapping_name(self) -> str:
        return self.scope.mapping_name

    async def write(
        self,
        work: list[Work],
        held: Mapping[tuple[str, int], int] | None = None,
        own: set[WriteTarget] | None = None,
    ) -> list[Work]:
        """Performs every writing decision; returns the work to decide again
        (stale ETags and vanished destinations). ``held``: the epochs of the
        partitions the work came from, checked before the sides are called;
        ``own``: the writes the batch announced so far (``BatchEffects.announced``),
        added to."""
        mapping = self.scope.mapping
        await self._announce(mapping, work, held, set() if own is None else own)
        ops: dict[Side, list[tuple[Work, WriteOp]]] = {"bc": [], "dataverse": []}
        for w in work:
            op = operation_of(w.decision)
            if op is not None:
                ops[write_side(w.decision)].append((w, op))
        if held and any(ops.values()):
            # The last moment before the sides are written: an instance that
            # lost these partitions while it was frozen must not write on.
            await self.scope.state.check_epochs(self.mapping_name, held)
        results = await together(
            *(self._answers(mapping, side, pairs) for side, pairs in ops.items() if pairs)
        )
        answered = [(w, result) for pairs, _ in results for w, result in pairs]
        # What the creates made is kept at once (even when another write of
        # the batch is refused for throttling, or the other side's call failed,
        # and the batch is tried again): the next attempt finds those records
        # by id, or knows them deleted.
        made: list[tuple[Side, str, str]] = []
        for w, result in answered:
            rid = made_id(w.decision, result, announced=w.performed.create_announced)
            if rid is not None:
                made.append((w.event.side, w.event.record_id, rid))
        # Recorded even by an instance fenced since it wrote: what the side
        # made is a fact the next owner needs (BC chooses its ids, so without
        # it a record made and then deleted by a user is created again), and
        # it decides nothing: the claim on these records is still this one's.
        await _kept(lambda: self.scope.state.record_made(self.mapping_name, made))
        for _, failed in results:
            if failed is not None:
                raise failed
        unavailable = first_unavailable((write_side(w.decision), r) for w, r in answered)
        if unavailable is not None:
            raise unavailable
        if results:
            faults.point("apply.after_write", self.mapping_name)
        again: list[Work] = []
        for w, result in answered:
            absorbed = absorb(
                w.decision,
                result,
                coupled=isinstance(w.facts.triage, FetchDestination),
                written_before=w.facts.announced.before,
            )
            w.done = replace(
                w.performed,
                decision=absorbed.decision,
                written=absorbed.written,
                refused=absorbed.refused,
            )
            if absorbed.again:
                again.append(w)
        return again

    async def _announce(
        self,
        mapping: TableMapping,
        work: list[Work],
        held: Mapping[tuple[str, int], int] | None,
        own: set[WriteTarget],
    ) -> None:
        """Announces the creates as intents, then the updates and deletions of
        existing records, each update with what it leaves on its record; ``own``
        holds what the batch announced before, and is added to."""
        intents: list[Intent] = []
        for w in work:
            d = w.decision
            if announces_create(d):
                intent = w.facts.intent
                announced = intent.dest_id if intent is not None else None
                d = replace(d, record_id=new_record_id(d.side, announced, self.scope.new_id))
                w.done = replace(w.performed, decision=d, create_announced=True)
                intents.append(
                    Intent(
                        self.mapping_name,
                        w.event.side,
                        w.event.record_id,
                        d.record_id,
                        self.scope.clock.now(),
                        sent_values(d.payload),
                    )
                )
        await self.scope.state.record_intents(intents, held=held)
        for w in work:
            w.facts = replace(w.facts, announced=announcing(w.facts.announced, w.decision))
        targets = [t for w in work if (t := w.facts.announced.target) is not None]
        if not targets:
            return
        images: dict[WriteTarget, dict[str, FieldValue]] = {}
        for w in work:
            target = w.facts.announced.target
            image = image_of(mapping, w.decision, w.performed.mapped, w.facts.destination)
            if target is not None and image is not None:
                images[target] = image
        earlier = await self.scope.state.announce_writes(
            self.mapping_name, targets, images, held=held
        )
        # Announced again by the batch that announced it first: its own write,
        # committed with it, not an attempt's that died.
        earlier -= own
        own |= set(targets)
        for w in work:
            w.facts = replace(w.facts, announced=announced_before(w.facts.announced, earlier))

    async def write_back(
        self, work: list[Work], held: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Sends back what the other side filled in on a create (a BC number from
        its number series, say) where the mapping carries it back, so both
        records agree at once rather than at their next change."""
        mapping = self.scope.mapping
        created = [
            (w, d, written)
            for w in work
            if writes_back(mapping, d := w.decision, written := w.performed.written)
            and isinstance(d, Create)
            and written is not None
        ]
        if not created:
            return
        keys: set[LookupKey] = set()
        for _, d, written in created:
            keys |= write_back_lookups(mapping, d, written)
        resolved = await self.scope.couplings.resolve(keys) if keys else {}
        ops: dict[Side, list[tuple[Work, WriteOp]]] = {"bc": [], "dataverse": []}
        for w, d, written in created:
            event = w.event
            payload = write_back(mapping, self.scope.mappings, event, d, written, resolved)
            if payload:
                ops[event.side].append((w, UpdateOp(event.record_id, payload, event.etag)))
        if held and any(ops.values()):
            await self.scope.state.check_epochs(self.mapping_name, held)
        results = await together(
            *(self._write_side(mapping, side, pairs) for side, pairs in ops.items() if pairs)
        )
        for pairs in results:
            for w, result in pairs:
                # A source changed meanwhile keeps its value; its own change syncs next.
                if isinstance(result, Written) and result.row is not None:
                    w.done = replace(w.performed, source_after=result.row)

    async def _answers(
        self, mapping: TableMapping, side: Side, pairs: list[tuple[Work, WriteOp]]
    ) -> tuple[list[tuple[Work, WriteResult]], BaseException | None]:
        """One side's answers, or the transient failure of its call: a side that
        went away never loses what the other side's call (beside it) made."""
        try:
            return await self._write_side(mapping, side, pairs), None
        except TRANSIENT as exc:
            return [], exc

    async def _write_side(
        self, mapping: TableMapping, side: Side, pairs: list[tuple[Work, WriteOp]]
    ) -> list[tuple[Work, WriteResult]]:
        results = await self.scope.apis[side].write(mapping.table(side), [op for _, op in pairs])
        return list(zip((w for w, _ in pairs), results, strict=True))


async def _kept(step: Callable[[], Awaitable[None]]) -> None:
    for pause in (*_KEEP_MADE_S, None):
        try:
            await step()
            return
        except TRANSIENT as exc:
            if pause is None:
                raise
            log.warning(
                "transient_failure", step="apply record_made", error=f"{type(exc).__name__}: {exc}"
            )
            await asyncio.sleep(pause)
