"""Bench ``continuous``: how fresh the other side stays under steady changes.

After a full sync has coupled N customers (CUSTOMER bidirectional, as shipped),
a writer changes ``rate`` customers a second in BC (``displayName``) and
``rate`` accounts a second in Dataverse (``name``) for ``duration`` seconds,
never the same record twice and never a record the other writer changes.

Latency is measured from outside, by value: the change time is the client's
clock when the API call returned; a checker polls the other side every
``POLL_S`` with a ``$filter`` on its modified stamp (BC ``lastModifiedDateTime``,
Dataverse ``modifiedon``, which has whole seconds: the filter only narrows the
rows, the value decides) and the change is applied when its value is first in
a response, at that response's arrival. A latency is therefore an upper bound,
late by at most one poll period plus one request.

Lag is read every ``LAG_EVERY_S`` from Kafka: committed offsets of every apply
consumer group against the end offsets of the topics they read."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.data import Templates, bench_mappings
from bench.deploy import TOKEN, Deployment, Infra, deployment
from bench.machine import CpuMeter
from bench.report import Figure, at_most
from tablesync.adapters.kafka import KafkaConnection
from tablesync.adapters.kafka.lag import GroupSpec, LagReader
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.composition import topics_for
from tablesync.core.mappings import MappingSet

__all__ = ["FIGURES", "MAPPINGS", "run_once"]

MAPPINGS = ["CURRENCY", "SALESPEOPLE", "CUSTOMER"]
POLL_S = 0.05
LAG_EVERY_S = 0.1
DRAIN_TIMEOUT_S = 30.0
SERVICES = {
    "capture-bc": ("run", "capture", "--side", "bc"),
    "capture-dataverse": ("run", "capture", "--side", "dataverse"),
    "apply": ("run", "apply"),
    "coordinator": ("run", "coordinator"),
}

FIGURES = [
    Figure("p50_s", "change -> visible on the other side, p50", "s", 2),
    Figure("p95_s", "change -> visible, p95", "s", 2),
    Figure("p99_s", "change -> visible, p99", "s", 2, target=at_most(1.5, "<= 1.5 (1 s polling)")),
    Figure("max_s", "change -> visible, max", "s", 2),
    Figure("bc_to_dv_p99_s", "  BC -> Dataverse p99", "s", 2),
    Figure("dv_to_bc_p99_s", "  Dataverse -> BC p99", "s", 2),
    Figure("changes", "changes made (both sides)", "changes"),
    Figure("unseen", "changes never seen within the drain time", "changes"),
    Figure("max_lag", "max consumer lag of the apply groups", "messages"),
    Figure("max_lag_age_s", "max age of the oldest unapplied event", "s", 2),
    Figure("busy_cpus", "CPUs busy on the machine (all work)", "CPUs", 2),
    Figure("load1", "load average (1 min) at the end", "", 2),
]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class _Direction:
    """Changes made on one side, awaited on the other."""

    name: str
    outstanding: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Destination record id -> (expected value, change time)."""
    latencies: list[float] = field(default_factory=list)
    made: int = 0

    def oldest(self) -> float | None:
        return min((t for _, t in self.outstanding.values()), default=None)


@dataclass
class _Sides:
    bc: httpx.AsyncClient
    dv: httpx.AsyncClient
    company: str

    def customers(self) -> str:
        return f"/BC/api/v2.0/companies({self.company})/customers"


def _stamp(at: float) -> str:
    # Dataverse stamps are whole seconds and both emulators stamp with the
    # database's clock: two seconds of slack keep every candidate row.
    moment = datetime.fromtimestamp(at, UTC) - timedelta(seconds=2)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _write_loop(
    direction: _Direction,
    targets: list[tuple[str, str]],
    write: Callable[[str, str], Awaitable[None]],
    rate: float,
    duration_s: float,
    tag: str,
) -> None:
    """Changes one target per 1/rate seconds on a fixed schedule; ``targets`` are
    (source id, destination id) pairs."""
    started = time.monotonic()
    for i, (source_id, dest_id) in enumerate(targets):
        due = started + i / rate
        if due - started >= duration_s:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        value = f"bench {direction.name} {i} {tag}"
        await write(source_id, value)
        direction.outstanding[dest_id] = (value, time.time())
        direction.made += 1


async def _check_loop(
    direction: _Direction,
    read: Callable[[str], Awaitable[list[tuple[str, str]]]],
    stop: asyncio.Event,
    drained: asyncio.Event,
) -> None:
    """Polls the destination until every change made is seen (or ``drained``)."""
    while not (stop.is_set() and not direction.outstanding):
        oldest = direction.oldest()
        if oldest is None:
            if stop.is_set():
                break
            await asyncio.sleep(POLL_S)
            continue
        started = time.monotonic()
        rows = await read(_stamp(oldest))
        arrived = time.time()
        for record_id, value in rows:
            expected = direction.outstanding.get(record_id)
            if expected is not None and expected[0] == value:
                direction.latencies.append(arrived - expected[1])
                del direction.outstanding[record_id]
        if drained.is_set():
            break
        await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - started)))


async def _lag_loop(
    dep: Deployment, stop: asyncio.Event, samples: list[tuple[int, float | None]]
) -> None:
    topics = topics_for(dep.settings)
    mappings = (await _mapping_set(dep)).mappings
    groups = [
        GroupSpec(
            group=f"{dep.prefix}tablesync.apply.{m.name}",
            topics=(topics.cdc("bc", m.bc_table), topics.cdc("dataverse", m.dataverse_table)),
            service="apply",
            mapping=m.name,
        )
        for m in mappings
    ]
    async with LagReader(
        KafkaConnection(dep.infra.kafka), client_id="tablesync-bench-lag"
    ) as reader:
        while not stop.is_set():
            report = await reader.read(groups)
            ages = [p.oldest_age_s for p in report.partitions if p.oldest_age_s is not None]
            samples.append((report.total, max(ages, default=None)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_EVERY_S)


async def _mapping_set(dep: Deployment) -> MappingSet:
    return await MappingStore(dep.pool).load()


async def _quiet(dep: Deployment, timeout_s: float = 120.0) -> None:
    """Until the apply groups have had no lag for two seconds (the echoes of the
    full sync's writes have been seen and dropped)."""
    samples: list[tuple[int, float | None]] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_lag_loop(dep, stop, samples))
    deadline = time.monotonic() + timeout_s
    try:
        zero_since: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            dep.procs.check_alive()
            if samples and samples[-1][0] == 0:
                zero_since = zero_since or time.monotonic()
                if time.monotonic() - zero_since >= 2.0:
                    return
            else:
                zero_since = None
        raise TimeoutError("the apply groups never caught up after the full sync")
    finally:
        stop.set()
        await task


async def run_once(
    infra: Infra,
    templates: Templates,
    *,
    rate: float,
    duration_s: float,
    keep_logs: bool = False,
) -> dict[str, Any]:
    async with deployment(
        infra,
        name="continuous",
        bc_template=templates.bc,
        dv_template=templates.dataverse,
        keep_logs=keep_logs,
    ) as dep:
        await dep.load_mappings(bench_mappings(MAPPINGS))
        await dep.start_emulators()
        await dep.start_services(SERVICES, probe=False)
        await dep.wait_ready(SERVICES, MAPPINGS)
        progress = await dep.full_sync()
        if progress.run.status != "finished":
            raise RuntimeError(f"the setup full sync ended {progress.run.status}")
        await _quiet(dep)
        return await _measure(dep, rate=rate, duration_s=duration_s)


async def _measure(dep: Deployment, *, rate: float, duration_s: float) -> dict[str, Any]:
    pairs = [
        (str(r["bc_id"]), str(r["dv_id"]))
        for r in await dep.pool.fetch(
            "SELECT bc_id, dv_id FROM couplings WHERE mapping = 'CUSTOMER' ORDER BY bc_id"
        )
    ]
    needed = int(rate * duration_s)
    if len(pairs) < 2 * needed:
        raise RuntimeError(f"{len(pairs)} coupled customers; {2 * needed} are needed")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=4)
    async with (
        httpx.AsyncClient(base_url=dep.bc_url, headers=headers, timeout=30, limits=limits) as bc,
        httpx.AsyncClient(base_url=dep.dv_url, headers=headers, timeout=30, limits=limits) as dv,
    ):
        company = (await bc.get("/BC/api/v2.0/companies")).json()["value"][0]["id"]
        sides = _Sides(bc, dv, company)
        tag = uuid.uuid4().hex[:6]
        to_dv = _Direction("bc->dataverse")
        to_bc = _Direction("dataverse->bc")

        async def write_bc(record_id: str, value: str) -> None:
            r = await bc.patch(
                f"{sides.customers()}({record_id})",
                json={"displayName": value},
                headers={"If-Match": "*"},
            )
            r.raise_for_status()

        async def write_dv(record_id: str, value: str) -> None:
            r = await dv.patch(
                f"/api/data/v9.2/accounts({record_id})",
                json={"name": value},
                headers={"If-Match": "*"},
            )
            r.raise_for_status()

        async def read_dv(since: str) -> list[tuple[str, str]]:
            r = await dv.get(
                "/api/data/v9.2/accounts",
                params={"$select": "accountid,name", "$filter": f"modifiedon ge {since}"},
            )
            r.raise_for_status()
            return [(row["accountid"], row["name"]) for row in r.json()["value"]]

        async def read_bc(since: str) -> list[tuple[str, str]]:
            r = await bc.get(
                sides.customers(),
                params={
                    "$select": "id,displayName",
                    "$filter": f"lastModifiedDateTime ge {since}",
                },
            )
            r.raise_for_status()
            return [(row["id"], row["displayName"]) for row in r.json()["value"]]

        stop = asyncio.Event()
        drained = asyncio.Event()
        lag: list[tuple[int, float | None]] = []
        cpu = CpuMeter()
        cpu.start()
        lag_task = asyncio.create_task(_lag_loop(dep, stop, lag))
        checkers = [
            asyncio.create_task(_check_loop(to_dv, read_dv, stop, drained)),
            asyncio.create_task(_check_loop(to_bc, read_bc, stop, drained)),
        ]
        started = time.monotonic()
        try:
            await asyncio.gather(
                _write_loop(to_dv, pairs[:needed], write_bc, rate, duration_s, tag),
                _write_loop(
                    to_bc,
                    [(dv_id, bc_id) for bc_id, dv_id in pairs[needed : 2 * needed]],
                    write_dv,
                    rate,
                    duration_s,
                    tag,
                ),
            )
            written_s = time.monotonic() - started
            stop.set()
            try:
                await asyncio.wait_for(asyncio.gather(*checkers), DRAIN_TIMEOUT_S)
            except TimeoutError:
                drained.set()
        finally:
            stop.set()
            drained.set()
            await asyncio.gather(*checkers, return_exceptions=True)
            await lag_task
            cpu.stop()
    latencies = to_dv.latencies + to_bc.latencies
    ages = [a for _, a in lag if a is not None]
    return {
        "figures": {
            "p50_s": percentile(latencies, 0.50),
            "p95_s": percentile(latencies, 0.95),
            "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies, default=None),
            "bc_to_dv_p99_s": percentile(to_dv.latencies, 0.99),
            "dv_to_bc_p99_s": percentile(to_bc.latencies, 0.99),
            "changes": float(to_dv.made + to_bc.made),
            "unseen": float(len(to_dv.outstanding) + len(to_bc.outstanding)),
            "max_lag": float(max((n for n, _ in lag), default=0)),
            "max_lag_age_s": max(ages, default=0.0),
            "busy_cpus": cpu.busy_cpus,
            "load1": cpu.load[-1].load1,
        },
        "write_rate_per_side": round(to_dv.made / written_s, 2) if written_s else None,
        "lag_samples": len(lag),
        "directions": {
            d.name: {
                "changes": d.made,
                "seen": len(d.latencies),
                "p50_s": percentile(d.latencies, 0.5),
                "p95_s": percentile(d.latencies, 0.95),
                "max_s": max(d.latencies, default=None),
            }
            for d in (to_dv, to_bc)
        },
        "machine_load": cpu.as_dict(),
    }
