"""A full synchronization that writes nothing: what it would create, couple,
update, leave unchanged, skip by filter, keep pending on lookups, and where
both sides changed.

It copies both sides (every table, read once through their APIs) into
in-memory sides that keep the emulators' rules, and the couplings into an
in-memory state database, then runs the very applier a full synchronization
runs on those copies — mapping by mapping in dependency order, BC → Dataverse
before Dataverse → BC, each direction's records as the snapshot would read
them then: later mappings resolve their lookups through the couplings
earlier ones made, and the reverse direction sees the records the first one
created. Neither side nor the state database is written."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tablesync.adapters.memory import memory_stores
from tablesync.core import filters
from tablesync.core.couplings import Coupling
from tablesync.core.decision import event_of
from tablesync.core.effects import BatchEffects
from tablesync.core.events import Direction, Side
from tablesync.core.mappings import MappingSet, TableMapping, source_side
from tablesync.core.plan import JobContext
from tablesync.emulators.memory import MemorySide
from tablesync.errors import ApiAuthError, ApiError, ApiUnavailable
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.ports.state import StateStores
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tablesync.settings import SyncSettings

__all__ = ["DirectionPreview", "dry_run"]

_SIDES: tuple[Side, Side] = ("bc", "dataverse")
_TOPIC = "(dry-run)"
_NOT_SERVED = 404


@dataclass
class DirectionPreview:
    """What a full synchronization would do for one mapping and direction.

    ``counts`` uses the job log's counters (inserted, coupled, modified,
    unchanged, skipped, failed, pending …) so it compares one to one with the
    run that follows; ``filtered`` and ``conflicts`` say why records are left out."""

    mapping: str
    direction: Direction
    counts: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    conflicts: int = 0
    examples: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "mapping": self.mapping,
            "direction": self.direction,
            "would_create": self.counts["inserted"],
            "would_couple_by_match": self.counts["coupled"],
            "would_update": self.counts["modified"],
            "unchanged": self.counts["unchanged"],
            "skipped_by_filter": self.filtered,
            "pending_on_lookups": self.counts["pending"],
            "in_conflict": self.conflicts,
            "would_fail": self.counts["failed"],
            "skipped": self.counts["skipped"],
            "counts": dict(self.counts),
            "examples": self.examples,
        }


async def dry_run(
    mappings: MappingSet,
    apis: dict[Side, SideApi],
    couplings: dict[str, list[Coupling]],
    clock: Clock,
    *,
    only: Sequence[str] = (),
    examples: int = 5,
    settings: SyncSettings | None = None,
    unconditional: bool = False,
) -> list[DirectionPreview]:
    """Previews a full synchronization of ``only`` (or every mapping);
    ``unconditional`` previews the unconditional one."""
    sides = {s: await _copy(apis[s], clock) for s in _SIDES}
    stores = memory_stores(clock=clock)
    for pairs in couplings.values():
        for c in pairs:
            await stores.couplings.couple(c, c.last_direction)
    previews: list[DirectionPreview] = []
    for mapping in mappings.mappings:
        if only and mapping.name not in only:
            continue
        applier = Applier(
            mapping.name,
            mappings,
            dict(sides),
            stores.couplings,
            stores.apply_state,
            JobEnsurer(mapping.name, stores.jobs.continuous_job),
            settings or SyncSettings(),
            clock,
        )
        for direction in mapping.directions():
            previews.append(
                await _preview(
                    applier, stores, sides, mapping, direction, clock, examples, unconditional
                )
            )
    return previews


async def _copy(api: SideApi, clock: Clock) -> MemorySide:
    """Every table of one side as its API returns it now, in memory."""
    # Fresh ids for the records the run would create: never one the side has.
    copy = MemorySide(api.side, clock, ids=lambda: str(uuid.uuid4()))
    for entity_set in copy.store.tables:
        try:
            async for page in api.read_all(entity_set):
                copy.load(entity_set, page)
        except (ApiUnavailable, ApiAuthError):
            # A copy short of rows would predict wrongly without a word.
            raise
        except ApiError as exc:
            if exc.status != _NOT_SERVED:
                raise
            # A table this tenant does not serve: nothing can be written to it.
    return copy


async def _preview(
    applier: Applier,
    stores: StateStores,
    sides: dict[Side, MemorySide],
    mapping: TableMapping,
    direction: Direction,
    clock: Clock,
    examples: int,
    unconditional: bool,
) -> DirectionPreview:
    preview = DirectionPreview(mapping.name, direction)
    side = source_side(direction)
    table = mapping.table(side)
    job_id = str(uuid.uuid4())
    await stores.jobs.create_job(
        job_id,
        run_id=None,
        mapping=mapping.name,
        direction=direction,
        kind="full",
        unconditional=unconditional,
    )
    context = JobContext(
        job_id, "full", ignore_only_coupled=True, direction=direction, unconditional=unconditional
    )
    now = clock.now()
    items: list[Item] = []
    # As the snapshot reads them: the rows in the mapping's filter, by id.
    for n, row in enumerate(sides[side].rows(table)):
        if not filters.evaluate(mapping.filter(side), row.fields, ignore_case=side == "dataverse"):
            preview.filtered += 1
            continue
        event = replace(event_of(row, side, table), captured_at=now, snapshot_job_id=job_id)
        items.append(Item(event, b"", context, _TOPIC, 0, n))
    effects = BatchEffects(mapping.name)
    await applier.apply(items, effects)
    await stores.apply_state.commit(effects)
    totals = await stores.jobs.totals(job_id)
    if totals is not None:
        preview.counts.update({k: v for k, v in totals.counts.items() if v})
    preview.conflicts = preview.counts["skipped"]
    _examples(preview, effects, examples)
    return preview


def _examples(preview: DirectionPreview, effects: BatchEffects, limit: int) -> None:
    for status in effects.statuses:
        bucket = preview.examples.setdefault(status.status, [])
        if len(bucket) < limit:
            bucket.append(
                {
                    "source_id": status.source_id,
                    "destination_id": status.destination_id,
                    "message": status.message,
                }
            )
    for error in effects.errors:
        bucket = preview.examples.setdefault("errors", [])
        if len(bucket) < limit:
            bucket.append(
                {
                    "source_id": error.source_id,
                    "destination_id": error.destination_id,
                    "message": error.message,
                }
            )
    for coupling, _ in effects.couplings:
        bucket = preview.examples.setdefault("coupled_records", [])
        if len(bucket) < limit:
            bucket.append({"bc_id": coupling.bc_id, "dataverse_id": coupling.dv_id})
