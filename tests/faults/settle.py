"""When the pipeline has *settled* — the moment the two sides are compared.

Settled means, all at once and without a break for ``stable_window_s``
(longer than a deletion scan, a look-back and several polls, so the slowest
loop has run in it):

1. every process runs, none frozen or with a fault point armed;
2. every apply group's committed offset is the end offset of every
   partition of its source topics (lag 0);
3. each capture's checkpoint has reached the newest change of its table, as
   the API shows it;
4. no record waits in ``record_status`` as pending or failed (with the
   suite's backoff, at most ``retry_backoff_max_s`` = 2 s, all of them are
   due soon); only skipped records may stay, and the verifier checks each
   one was expected;
5. no create intent is open, except for creates the destination refused;
6. no operator run is requested or running;
7. the ETag of every record on both sides stayed the same.

Records whose ETag keeps moving while 1 to 6 hold are tablesync writing without
a change to carry: an echo. If the window never completes before the
timeout, the report says which condition failed last and which records moved."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka.errors import KafkaError

from tablesync.core.events import Side
from tests.faults.broker import apply_lag
from tests.faults.pipeline import Pipeline
from tests.faults.scope import TABLES
from tests.faults.sides import id_field

__all__ = ["SettleReport", "settle"]

_STAMP = {"bc": "lastModifiedDateTime", "dataverse": "modifiedon"}
_PROBE_EVERY_S = 1.0


@dataclass
class SettleReport:
    settled: bool
    seconds: float
    reasons: list[str] = field(default_factory=list)
    moving: set[str] = field(default_factory=set)


@dataclass
class _Probe:
    reasons: list[str]
    versions: dict[str, str]


async def settle(
    p: Pipeline, *, timeout_s: float, stable_window_s: float, poison_ids: set[str]
) -> SettleReport:
    started = time.monotonic()
    window_from: float | None = None
    previous: dict[str, str] | None = None
    moving: set[str] = set()
    last_reasons: list[str] = []
    while True:
        probe = await _probe(p, poison_ids)
        now = time.monotonic()
        if previous is None:
            rewritten, came_or_went = set(), set(probe.versions)
        else:
            rewritten = {
                k
                for k in probe.versions.keys() & previous.keys()
                if probe.versions[k] != previous[k]
            }
            came_or_went = probe.versions.keys() ^ previous.keys()
        if probe.reasons:
            window_from = None
            last_reasons = probe.reasons
        elif rewritten or came_or_went:
            # Quiet everywhere else, yet records were written: a record rewritten
            # again and again is ping-pong; watch whether they stop.
            if window_from is not None:
                moving |= rewritten
            window_from = None
            last_reasons = [f"{len(rewritten | came_or_went)} records changed since the last look"]
        elif window_from is None:
            window_from = now
        elif now - window_from >= stable_window_s:
            return SettleReport(True, now - started, moving=moving)
        previous = probe.versions
        if now - started > timeout_s:
            return SettleReport(False, now - started, last_reasons, moving)
        await asyncio.sleep(_PROBE_EVERY_S)


async def _probe(p: Pipeline, poison_ids: set[str]) -> _Probe:
    reasons: list[str] = []
    for proc in p.supervisor.procs.values():
        if not proc.running or proc.paused or proc.armed is not None:
            reasons.append(f"{proc.name} is not running normally")
    versions: dict[str, str] = {}
    newest: dict[tuple[Side, str], datetime] = {}
    for table in TABLES:
        for side in ("bc", "dataverse"):
            entity_set = table.entity_set(side)
            for row in await p.apis[side].rows(entity_set):
                key = f"{side}:{entity_set}:{row[id_field(side, entity_set)]}"
                versions[key] = str(row.get("@odata.etag"))
                stamp = datetime.fromisoformat(str(row[_STAMP[side]]).replace("Z", "+00:00"))
                current = newest.get((side, entity_set))
                newest[(side, entity_set)] = stamp if current is None else max(current, stamp)
    checkpoints = {
        (r["side"], r["table_name"]): r["watermark"]
        for r in await p.query("SELECT side, table_name, watermark FROM capture_checkpoints")
    }
    for (side, entity_set), stamp in newest.items():
        mark = checkpoints.get((side, entity_set))
        if mark is None or mark < stamp:
            reasons.append(f"capture {side} has not reached the newest {entity_set}")
    lag = await _lag(p)
    reasons += [f"{group} lags by {n}" for group, n in lag.items() if n]
    waiting = await p.query(
        "SELECT mapping, status, count(*) AS n FROM record_status "
        "WHERE status IN ('pending', 'failed') GROUP BY mapping, status"
    )
    reasons += [f"{r['n']} {r['status']} in {r['mapping']}" for r in waiting]
    intents = await p.query("SELECT source_id FROM create_intents")
    open_intents = [r["source_id"] for r in intents if r["source_id"] not in poison_ids]
    if open_intents:
        reasons.append(f"{len(open_intents)} create intents open")
    runs = await p.query("SELECT count(*) AS n FROM runs WHERE status IN ('requested', 'running')")
    if runs[0]["n"]:
        reasons.append(f"{runs[0]['n']} operator runs not finished")
    return _Probe(reasons, versions)


async def _lag(p: Pipeline) -> dict[str, int | str]:
    groups: dict[str, list[str]] = {}
    for table in TABLES:
        groups[f"{p.topics.prefix}tablesync.apply.{table.mapping}"] = [
            p.topics.cdc("bc", table.bc_set),
            p.topics.cdc("dataverse", table.dv_set),
        ]
    try:
        lag: dict[str, int | str] = dict(
            await asyncio.wait_for(apply_lag(p.infra.bootstrap, groups), 30.0)
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        return {"the lag probe": f"no answer ({type(exc).__name__})"}
    return lag
