"""Bench ``memory``: peak resident memory of one apply instance while it applies
a full sync of a table of each of two sizes.

``tablesync run apply --mapping CUSTOMER`` runs as its own process; CURRENCY
and SALESPEOPLE (CUSTOMER's lookups) have their own apply processes, capture
and the coordinator theirs. The peak is the kernel's high-water mark of the
resident set (VmHWM in /proc/<pid>/status), read after the full sync; the
baseline is the same mark once the instance is up, before the sync."""

from __future__ import annotations

import time
from typing import Any

from bench.data import Templates, bench_mappings
from bench.deploy import Infra, deployment
from bench.machine import memory_kib
from bench.report import Figure, Target

__all__ = ["MAPPINGS", "figures", "run_once"]

MAPPINGS = ["CURRENCY", "SALESPEOPLE", "CUSTOMER"]
DIRECTIONS = {"CUSTOMER": "to_integration"}
MEASURED = "apply-CUSTOMER"
SERVICES = {
    "capture-bc": ("run", "capture", "--side", "bc"),
    "capture-dataverse": ("run", "capture", "--side", "dataverse"),
    "coordinator": ("run", "coordinator"),
    "apply-CURRENCY": ("run", "apply", "--mapping", "CURRENCY"),
    "apply-SALESPEOPLE": ("run", "apply", "--mapping", "SALESPEOPLE"),
    MEASURED: ("run", "apply", "--mapping", "CUSTOMER"),
}
_MIB = 1024


def figures(small: int, large: int) -> list[Figure]:
    ceiling = Target("<= 300", lambda v: v <= 300)
    return [
        Figure("baseline_mib", "apply CUSTOMER after start (VmHWM)", "MiB", 1),
        Figure("peak_small_mib", f"apply CUSTOMER peak, {small:,} records", "MiB", 1, ceiling),
        Figure("peak_large_mib", f"apply CUSTOMER peak, {large:,} records", "MiB", 1, ceiling),
        Figure("records_per_s_large", f"full sync rate, {large:,} customers", "records/s"),
        Figure("growth_mib", f"peak growth {small:,} -> {large:,} records", "MiB", 1),
        # Flat, allowing for the allocator's noise between two runs.
        Figure("growth_pct", "peak growth, relative", "%", 1, Target("<= 10", lambda v: v <= 10)),
    ]


async def peak_of(infra: Infra, templates: Templates, *, keep_logs: bool) -> dict[str, Any]:
    """One full sync of CUSTOMER (and its lookups) with a separate apply instance."""
    async with deployment(
        infra,
        name="memory",
        bc_template=templates.bc,
        dv_template=templates.dataverse,
        keep_logs=keep_logs,
    ) as dep:
        await dep.load_mappings(bench_mappings(MAPPINGS, DIRECTIONS))
        await dep.start_emulators()
        await dep.start_services(SERVICES, probe=False)
        await dep.wait_ready(SERVICES, MAPPINGS)
        pid = dep.services[MEASURED].pid
        baseline = memory_kib(pid)
        started = time.monotonic()
        progress = await dep.full_sync()
        seconds = time.monotonic() - started
        after = memory_kib(pid)
        inserted = sum(
            j.counts.get("inserted", 0) for j in progress.jobs if j.mapping == "CUSTOMER"
        )
        return {
            "status": progress.run.status,
            "customers_inserted": inserted,
            "baseline_mib": baseline.get("VmHWM", 0) / _MIB,
            "peak_mib": after.get("VmHWM", 0) / _MIB,
            "rss_end_mib": after.get("VmRSS", 0) / _MIB,
            "run_s": round(seconds, 1),
            "records_per_s": inserted / seconds if seconds else None,
        }


async def run_once(
    infra: Infra,
    small: Templates,
    large: Templates,
    *,
    keep_logs: bool = False,
) -> dict[str, Any]:
    first = await peak_of(infra, small, keep_logs=keep_logs)
    second = await peak_of(infra, large, keep_logs=keep_logs)
    growth = second["peak_mib"] - first["peak_mib"]
    return {
        "figures": {
            "baseline_mib": max(first["baseline_mib"], second["baseline_mib"]),
            "peak_small_mib": first["peak_mib"],
            "peak_large_mib": second["peak_mib"],
            "growth_mib": growth,
            "growth_pct": 100 * growth / first["peak_mib"] if first["peak_mib"] else None,
            "records_per_s_large": second["records_per_s"],
        },
        "small": first,
        "large": second,
    }
