"""Bench ``fullsync``: a first full synchronization BC -> Dataverse of N customers
and N person contacts through the real services, each in its own process.

What runs: the BC and Dataverse emulators (``tablesync emulator bc|dataverse``),
``tablesync run capture --side bc``, ``… --side dataverse``, ``tablesync run
apply`` (every mapping) and ``tablesync run coordinator``, each through
``bench.probe`` for the stage timers. The mappings are the defaults narrowed to
CURRENCY, SALESPEOPLE, CUSTOMER and CONTACTS, with CUSTOMER and CONTACTS set
to ``to_integration`` (see ``bench.data`` for the data).

End to end is *capture to last coupling*: from the moment capture started
serving the first snapshot of the run to the commit of the last coupling, both
read from the state database's clock. Records are the job counters inserted,
modified and unchanged of every job of the run.

Two figures judge tablesync's own cost apart from the machine's: its CPU per
record (the capture, apply and coordinator processes alone: not the emulators,
the broker or any PostgreSQL backend), and the API requests it sent per 1,000
records on each side (the emulators' counters before and after the run)."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import probe
from bench.data import Templates, bench_mappings
from bench.deploy import Deployment, Infra, deployment
from bench.machine import CpuMeter, ProcessCpu, listening_pid
from bench.pgstat import PgSampler
from bench.pyspy import PySpy
from bench.report import Figure, at_least, at_most
from tablesync.localinfra.paths import state_dir
from tablesync.settings import Settings

__all__ = [
    "API_FIGURES",
    "DIRECTIONS",
    "FIGURES",
    "MAPPINGS",
    "SERVICES",
    "measure",
    "run_once",
]

MAPPINGS = ["CURRENCY", "SALESPEOPLE", "CUSTOMER", "CONTACTS"]
DIRECTIONS = {"CUSTOMER": "to_integration", "CONTACTS": "to_integration"}
SERVICES = {
    "capture-bc": ("run", "capture", "--side", "bc"),
    "capture-dataverse": ("run", "capture", "--side", "dataverse"),
    "apply": ("run", "apply"),
    "coordinator": ("run", "coordinator"),
}
_SYNCED = ("inserted", "modified", "unchanged", "deleted")

API_FIGURES = [
    Figure(
        "own_cpu_ms_per_record",
        "tablesync's own CPU per record (capture + apply + coordinator)",
        "ms",
        3,
        at_most(0.15, "<= 0.15"),
    ),
    Figure(
        "bc_requests_per_1000",
        "BC API requests per 1,000 records synced",
        "requests",
        1,
        at_most(12, "<= 12"),
    ),
    Figure(
        "dataverse_requests_per_1000",
        "Dataverse API requests per 1,000 records synced",
        "requests",
        1,
        at_most(2, "<= 2"),
    ),
]
"""Figures every full sync reports, with or without the real limits."""
FIGURES = [
    Figure(
        "e2e_rps",
        "full sync end to end (capture -> last coupling)",
        "records/s",
        target=at_least(5000, ">= 5,000"),
    ),
    *API_FIGURES,
    Figure("records", "records synced", "records"),
    Figure("e2e_s", "capture -> last coupling", "s", 1),
    Figure("run_s", "run requested -> finished", "s", 1),
    Figure("customer_rps", "CUSTOMER job, snapshot start -> last coupling", "records/s"),
    Figure("contacts_rps", "CONTACTS job, snapshot start -> last coupling", "records/s"),
    Figure("capture_rps", "stage capture: read + publish snapshot", "records/s"),
    Figure("capture_read_rps", "  capture: read pages (overlaps publishing)", "records/s"),
    Figure("kafka_publish_rps", "stage Kafka: capture publish (encode + send + ack)", "records/s"),
    Figure("kafka_fetch_rps", "stage Kafka: apply fetch + offset commit", "records/s"),
    Figure("apply_rps", "stage apply: whole batches (busy time)", "records/s"),
    Figure("destination_write_rps", "  apply: destination write ($batch)", "records/s"),
    Figure("coupling_write_rps", "  apply: coupling write (state commit)", "records/s"),
    Figure("apply_busy_share", "apply busy / end-to-end time", "%", 0),
    Figure("cpu_ms_per_record", "CPU per record, bench processes + their PG backends", "ms", 2),
    Figure("others_busy_cpus", "CPUs busy with other work during the run", "CPUs", 2),
]


async def run_once(
    infra: Infra,
    templates: Templates,
    *,
    profile: bool = False,
    keep_logs: bool = False,
) -> dict[str, Any]:
    """One repetition; with ``profile`` the processes run under py-spy and the
    result carries the profiles (its figures are not comparable then)."""
    async with deployment(
        infra,
        name="fullsync",
        bc_template=templates.bc,
        dv_template=templates.dataverse,
        keep_logs=keep_logs,
    ) as dep:
        document = bench_mappings(MAPPINGS, DIRECTIONS)
        await dep.load_mappings(document)
        await dep.start_emulators()
        await dep.start_services(SERVICES)
        await dep.wait_ready(SERVICES, MAPPINGS)
        return await measure(dep, document, profile=profile)


async def measure(
    dep: Deployment, document: dict[str, Any], *, profile: bool = False
) -> dict[str, Any]:
    """Runs a full sync on a ready deployment and reads every figure."""
    stats_before = {s: await dep.emulator_stats(s) for s in ("bc", "dataverse")}
    cpu = CpuMeter()
    processes = ProcessCpu()
    for child in dep.emulators.values():
        processes.watch(child.name, child.pid)
    for child in dep.services.values():
        processes.watch(f"tablesync {child.name}", child.pid)
    if infra_pid := _kafka_pid(dep.infra.kafka):
        processes.watch("kafka (shared broker)", infra_pid)
    databases = {_db(dep.state_dsn): "state", _db(dep.bc_dsn): "bc", _db(dep.dv_dsn): "dataverse"}
    pg = PgSampler(dep.infra.admin_dsn, databases, interval_s=0.1 if profile else 0.5)
    spy = PySpy(dep.procs, dep.workdir) if profile else None
    if spy is not None:
        for child in [*dep.emulators.values(), *dep.services.values()]:
            await spy.attach(child.name, child.pid)
    await pg.start()
    cpu.start()
    try:
        progress = await dep.full_sync()
    finally:
        cpu.stop()
        processes.sample()
        await pg.stop()
    profiles = await spy.stop() if spy is not None else {}
    stats_after = {s: await dep.emulator_stats(s) for s in ("bc", "dataverse")}
    window = await _window(dep.pool, progress.run.run_id)
    await dep.stop_services()
    timers = {name: probe.load(dep.probe_file(name)) for name in SERVICES}
    batches = _batches(dep.log("apply"))
    jobs = [j.as_dict() for j in progress.jobs]
    records = sum(sum(j.counts.get(k, 0) for k in _SYNCED) for j in progress.jobs)
    problems = {
        k: sum(j.counts.get(k, 0) for j in progress.jobs) for k in ("failed", "pending", "skipped")
    }
    figures, stages = _figures(window, timers, records, progress.run)
    cpu_seconds = {**processes.seconds(), **_prefixed(pg.cpu_by_database())}
    ours = sum(v for k, v in cpu_seconds.items() if not k.startswith("kafka"))
    kafka = sum(v for k, v in cpu_seconds.items() if k.startswith("kafka"))
    figures["cpu_ms_per_record"] = 1000 * ours / records if records else None
    own = {name: cpu_seconds.get(f"tablesync {name}", 0.0) for name in SERVICES}
    figures["own_cpu_ms_per_record"] = 1000 * sum(own.values()) / records if records else None
    requests = {side: _diff(stats_before[side], stats_after[side]) for side in stats_before}
    for side in requests:
        total = requests[side]["total"]
        figures[f"{side}_requests_per_1000"] = 1000 * total / records if records else None
    # The shared broker's CPU is counted as the bench's: it may carry others' traffic too.
    figures["others_busy_cpus"] = max(cpu.busy_cpus - (ours + kafka) / cpu.seconds, 0.0)
    return {
        "figures": figures,
        "run_status": progress.run.status,
        "problems": problems,
        "jobs": [
            {k: v for k, v in j.items() if k not in ("job_id", "run_id", "type", "message")}
            for j in jobs
        ],
        "stages": stages,
        "apply_batches": batches,
        "cpu_seconds": cpu_seconds,
        "own_cpu": {
            name: {
                "seconds": seconds,
                "ms_per_record": round(1000 * seconds / records, 4) if records else None,
            }
            for name, seconds in own.items()
        },
        "machine_load": cpu.as_dict(),
        "emulator_requests": requests,
        "postgres_connections": pg.max_connections,
        "postgres_top_statements": pg.top_statements(),
        "postgres_top_waits": pg.top_waits(),
        "profiles": {name: p.as_dict() for name, p in profiles.items()},
        "profile_errors": spy.errors if spy is not None else {},
        "mappings": sorted(document["mappings"]),
    }


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


def _prefixed(cpu: dict[str, float]) -> dict[str, float]:
    return {f"postgres ({label} db)": seconds for label, seconds in cpu.items()}


def _kafka_pid(bootstrap: str) -> int | None:
    """The broker's process: the one ``make infra-up`` started here, or else
    whichever process of this machine listens on the bootstrap port (a broker
    this checkout found already running: another checkout's, or the user's
    own); None when the broker is elsewhere."""
    pid_file = state_dir(Settings()) / "kafka" / "kafka.pid"
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text().strip())
    with contextlib.suppress(ValueError, IndexError):
        return listening_pid(int(bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)[1]))
    return None


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    methods = {
        m: after["by_method"].get(m, 0) - before["by_method"].get(m, 0) for m in after["by_method"]
    }
    diff: dict[str, Any] = {
        "total": after["total"] - before["total"],
        "throttled": after["throttled"] - before["throttled"],
        "by_method": {m: n for m, n in methods.items() if n},
    }
    if "real_limits" in after:
        # Under the real limits: what the run cost the server (see emulators/common/limiter.py).
        real_before = before.get("real_limits", {})
        diff["real_limits"] = {
            key: round(value - real_before.get(key, 0), 3)
            for key, value in after["real_limits"].items()
            if key in ("execution_s", "records_written", "queued")
        }
    return diff


@dataclass(frozen=True, slots=True)
class _Window:
    capture_start: datetime
    last_coupling: datetime
    snapshots: list[dict[str, Any]]
    couplings: dict[str, dict[str, Any]]


async def _window(pool: Any, run_id: str) -> _Window:
    snapshots = await pool.fetch(
        """
        SELECT j.mapping, j.direction, s.table_name, s.records, s.started_at, s.finished_at
        FROM jobs j JOIN snapshots s USING (job_id)
        WHERE j.run_id = $1 ORDER BY s.started_at
        """,
        _uuid(run_id),
    )
    couplings = await pool.fetch(
        "SELECT mapping, count(*) AS n, min(coupled_at) AS first, max(coupled_at) AS last "
        "FROM couplings GROUP BY mapping"
    )
    if not snapshots or not couplings:
        raise RuntimeError("the full sync published no snapshot or made no coupling")
    return _Window(
        capture_start=min(r["started_at"] for r in snapshots),
        last_coupling=max(r["last"] for r in couplings),
        snapshots=[dict(r) for r in snapshots],
        couplings={r["mapping"]: dict(r) for r in couplings},
    )


def _uuid(value: str) -> uuid.UUID:
    return uuid.UUID(value)


def _stage(
    timers: dict[str, dict[str, probe.Timer]],
    process: str,
    prefix: str,
    start: float,
    end: float,
) -> probe.Timer:
    """The calls of ``process``'s timers named ``prefix`` or ``prefix/…`` within the window."""
    total = probe.Timer()
    for key, timer in timers.get(process, {}).items():
        if key == prefix or key.startswith(prefix + "/"):
            part = timer.within(start, end)
            total.seconds += part.seconds
            total.calls += part.calls
            total.records += part.records
            total.spans.extend(part.spans)
    return total


def _rate(records: int, seconds: float) -> float | None:
    return records / seconds if seconds > 0 and records else None


def _figures(
    window: _Window,
    timers: dict[str, dict[str, probe.Timer]],
    records: int,
    run: Any,
) -> tuple[dict[str, float | None], dict[str, Any]]:
    start = window.capture_start.timestamp()
    # A margin so that the calls in flight at the edges (the batch that made the
    # last coupling ends a few milliseconds after its commit) are kept.
    end = window.last_coupling.timestamp() + 0.5
    e2e = (window.last_coupling - window.capture_start).total_seconds()
    stage_names = {
        "capture_snapshot": ("capture-bc", "capture.snapshot"),
        "capture_read": ("capture-bc", "capture.snapshot_read"),
        "capture_publish": ("capture-bc", "capture.publish/bc/snapshot"),
        "apply_fetch": ("apply", "kafka.fetch"),
        "apply_commit_offsets": ("apply", "kafka.commit"),
        "apply_batch": ("apply", "apply.batch"),
        "apply_read_positions": ("apply", "apply.read_positions"),
        "apply_read_couplings": ("apply", "apply.read_couplings"),
        "apply_read_statuses": ("apply", "apply.read_statuses"),
        "apply_read_deleted": ("apply", "apply.read_deleted"),
        "apply_read_destination": ("apply", "apply.read_destination"),
        "apply_resolve_lookups": ("apply", "apply.resolve_lookups"),
        "apply_write_intents": ("apply", "apply.write_intents"),
        "apply_destination_write": ("apply", "apply.destination_write"),
        "apply_state_commit": ("apply", "apply.state_commit"),
        "apply_publish_outcomes": ("apply", "apply.publish_outcomes"),
        "apply_retries": ("apply", "apply.retries"),
    }
    stages = {
        name: _stage(timers, process, prefix, start, end)
        for name, (process, prefix) in stage_names.items()
    }
    snapshot_records = sum(r["records"] for r in window.snapshots if r["table_name"])
    capture_seconds = sum(
        (r["finished_at"] - r["started_at"]).total_seconds()
        for r in window.snapshots
        if r["finished_at"] is not None
    )
    busy = {name: t.busy() for name, t in stages.items()}

    def rate(name: str, seconds: float | None = None) -> float | None:
        return _rate(stages[name].records, busy[name] if seconds is None else seconds)

    apply = busy["apply_batch"]
    figures: dict[str, float | None] = {
        "e2e_rps": _rate(records, e2e),
        "records": float(records),
        "e2e_s": e2e,
        "run_s": (run.finished_at - run.requested_at).total_seconds()
        if run.finished_at and run.requested_at
        else None,
        "customer_rps": _mapping_rate(window, "CUSTOMER"),
        "contacts_rps": _mapping_rate(window, "CONTACTS"),
        "capture_rps": _rate(snapshot_records, capture_seconds),
        "capture_read_rps": rate("capture_read"),
        "kafka_publish_rps": rate("capture_publish"),
        "kafka_fetch_rps": rate("apply_fetch", busy["apply_fetch"] + busy["apply_commit_offsets"]),
        "apply_rps": rate("apply_batch"),
        "destination_write_rps": rate("apply_destination_write"),
        "coupling_write_rps": rate("apply_state_commit"),
        "apply_busy_share": 100 * apply / e2e if e2e > 0 else None,
    }
    breakdown = {
        name: {
            # busy: wall time with a call in flight; calls: their durations added up
            # (more than busy where apply runs partitions side by side).
            "busy_seconds": round(busy[name], 2),
            "call_seconds": round(t.seconds, 2),
            "calls": t.calls,
            "records": t.records,
            "share_of_apply_busy": round(busy[name] / apply, 3)
            if name.startswith("apply_") and apply
            else None,
        }
        for name, t in stages.items()
    }
    details = {
        "window": {
            "capture_start": window.capture_start.isoformat(),
            "last_coupling": window.last_coupling.isoformat(),
        },
        "snapshots": [
            {
                "mapping": r["mapping"],
                "table": r["table_name"],
                "records": r["records"],
                "seconds": round((r["finished_at"] - r["started_at"]).total_seconds(), 2)
                if r["finished_at"]
                else None,
            }
            for r in window.snapshots
        ],
        "couplings": {
            m: {"count": c["n"], "last": c["last"].isoformat()} for m, c in window.couplings.items()
        },
        "breakdown": breakdown,
    }
    return figures, details


def _mapping_rate(window: _Window, mapping: str) -> float | None:
    starts = [r["started_at"] for r in window.snapshots if r["mapping"] == mapping]
    coupled = window.couplings.get(mapping)
    if not starts or coupled is None:
        return None
    seconds = (coupled["last"] - min(starts)).total_seconds()
    return _rate(int(coupled["n"]), seconds)


def _batches(log: Path) -> dict[str, dict[str, float]]:
    """Per mapping: batches, events and milliseconds from the ``batch_applied`` lines."""
    totals: dict[str, dict[str, float]] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if '"batch_applied"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                t = totals.setdefault(entry["mapping"], {"batches": 0, "events": 0, "ms": 0})
                t["batches"] += 1
                t["events"] += entry["events"]
                t["ms"] += entry["ms"]
    return totals
