"""Replay a time window of captured changes through the apply rules.

After a mapping is fixed, the changes it got wrong are still on the retained
change topics. A replay reads the window from both sides' topics (offsets
found by timestamp), merges the two in time order, and applies every change
again under the mapping as it is now: a version applied before is applied
once more, an older one still never overwrites a newer, and values already
right are left alone — so a second replay of the same window changes nothing.
Each chunk is claimed while it is decided, as apply's batches are
(``runtime.claiming``): a pair an apply instance is deciding is replayed on
what that instance committed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog

from tablesync.adapters.avro import Codec
from tablesync.core.events import RecordChanged, Side
from tablesync.core.mappings import MappingSet, direction_of
from tablesync.core.plan import JobContext
from tablesync.core.topics import Topics
from tablesync.errors import DecodeError
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaims
from tablesync.ports.clock import Clock
from tablesync.ports.log import LogWindow
from tablesync.ports.state import Jobs, StateStores
from tablesync.runtime.applier import Applier, Item, JobEnsurer
from tablesync.runtime.claiming import apply_claimed
from tablesync.settings import SyncSettings

__all__ = ["ReplayResult", "replay"]

log = structlog.get_logger()

REPLAY_TOPIC = "(replay)"
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReplayResult:
    job_ids: dict[str, str]
    events: int
    counts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {"jobs": self.job_ids, "events": self.events, "counts": self.counts}


async def replay(
    *,
    mapping: str,
    since: datetime,
    until: datetime | None,
    stores: StateStores,
    window: LogWindow,
    apis: dict[Side, SideApi],
    mappings: MappingSet,
    topics: Topics,
    settings: SyncSettings,
    codec: Codec,
    clock: Clock,
    claims: PairClaims,
) -> ReplayResult:
    m = mappings.get(mapping)
    sources = [topics.cdc("bc", m.bc_table), topics.cdc("dataverse", m.dataverse_table)]
    captured = await window.read(sources, since, until)
    jobs = stores.jobs
    job_ids: dict[str, str] = {}
    for direction in m.directions():
        job_id = str(uuid.uuid4())
        await jobs.create_job(
            job_id, run_id=None, mapping=mapping, direction=direction, kind="replay"
        )
        job_ids[direction] = job_id
    state = stores.apply_state
    applier = Applier(
        mapping,
        mappings,
        apis,
        stores.couplings,
        state,
        JobEnsurer(mapping, jobs.continuous_job),
        settings,
        clock,
    )
    origins: dict[str, tuple[str, bool] | None] = {}
    items: list[Item] = []
    for record in captured:
        try:
            event = codec.decode(record.value)
        except DecodeError:
            continue
        if not isinstance(event, RecordChanged) or direction_of(event.side) not in job_ids:
            continue
        cleared = False
        if event.snapshot_job_id is not None:
            origin = await _origin(jobs, origins, event.snapshot_job_id)
            if origin is not None and origin[0] != mapping:
                continue  # another mapping's snapshot of a shared table
            # A full sync's creates stay creates when its events are replayed.
            cleared = origin is not None and origin[1]
        direction = direction_of(event.side)
        context = JobContext(
            job_ids[direction],
            "replay",
            ignore_only_coupled=cleared,
            reapply=True,
            direction=direction,
        )
        items.append(Item(event, record.value, context, REPLAY_TOPIC, 0))
    for start in range(0, len(items), _CHUNK):
        await apply_claimed(
            applier, claims, state, items[start : start + _CHUNK], wait_s=settings.claim_wait_s
        )
    counts: dict[str, int] = {}
    for job_id in job_ids.values():
        await jobs.finish_job(
            job_id,
            message=f"replay of {since.isoformat()} .. {until.isoformat() if until else 'now'}",
        )
        totals = await jobs.totals(job_id)
        if totals is not None:
            for k, v in totals.counts.items():
                counts[k] = counts.get(k, 0) + v
    log.info("replayed", mapping=mapping, events=len(items), counts=counts)
    return ReplayResult(job_ids, len(items), counts)


async def _origin(
    jobs: Jobs, cache: dict[str, tuple[str, bool] | None], job_id: str
) -> tuple[str, bool] | None:
    """The mapping of the job a snapshot event was read for, and whether that
    job cleared sync-only-coupled; None for a job this database never saw."""
    if job_id not in cache:
        params = await jobs.job_params(job_id)
        cache[job_id] = (params.mapping, params.ignore_only_coupled) if params else None
    return cache[job_id]
