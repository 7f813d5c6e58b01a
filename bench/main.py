"""``python -m bench``: runs the benches, prints their tables, writes their JSON."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from bench import apilimits, continuous, fullsync, limit, memory
from bench.data import Templates, make_templates
from bench.deploy import EMULATOR_BUDGET, Infra
from bench.machine import git_state, machine_info, versions
from bench.report import Figure, Result, at_least, render_table, write_result
from tablesync import localinfra
from tablesync.settings import ApiSettings, Settings, SyncSettings

__all__ = ["FULL", "SMOKE", "Plan", "main", "run_benches"]

T = TypeVar("T")
BENCHES = ("fullsync", "limit", "apilimits", "continuous", "memory", "profile")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Plan:
    smoke: bool
    repeats: int
    records_per_table: int
    """Full sync: N BC customers and N BC contacts."""
    continuous_rate: float
    """Changes a second on each side."""
    continuous_duration_s: float
    memory_sizes: tuple[int, int]
    profile_records_per_table: int
    apilimits_records_per_table: int
    """Full sync under the real limits: long enough for several of its windows."""
    apilimits_users: tuple[int, ...] = (1, 3)
    """Application users per side, a set of runs for each."""


FULL = Plan(
    smoke=False,
    repeats=3,
    records_per_table=100_000,
    continuous_rate=20.0,
    continuous_duration_s=60.0,
    memory_sizes=(10_000, 100_000),
    profile_records_per_table=100_000,
    apilimits_records_per_table=50_000,
)
SMOKE = Plan(
    smoke=True,
    repeats=1,
    records_per_table=1_000,
    continuous_rate=20.0,
    continuous_duration_s=10.0,
    memory_sizes=(1_000, 2_000),
    profile_records_per_table=500,
    apilimits_records_per_table=1_000,
)

RATIO = Figure(
    "ratio_to_limit",
    "tablesync / limit (same run)",
    "x",
    2,
    at_least(0.5, ">= 0.5"),
)
PROFILE_FIGURES = [
    Figure("e2e_rps", "full sync under py-spy (not comparable)", "records/s"),
    Figure("cpu_services_s", "CPU: tablesync processes", "s", 1),
    Figure("cpu_emulators_s", "CPU: both emulators", "s", 1),
    Figure("cpu_postgres_s", "CPU: PostgreSQL backends of the bench", "s", 1),
    Figure("cpu_kafka_s", "CPU: Kafka broker (shared with other users)", "s", 1),
]


def _say(message: str) -> None:
    print(message, flush=True)


_ATTEMPTS = 3


async def _attempt(what: str, run: Callable[[], Awaitable[T]]) -> T:
    """``run()``, again when PostgreSQL refused a connection: the local server is
    shared and another suite can take its last connections at any moment. Any
    other failure ends the bench."""
    for attempt in range(1, _ATTEMPTS + 1):
        # The engine is read from disk by every service process a run starts.
        engine = git_state()
        try:
            result = await run()
            if isinstance(result, dict):
                result["engine"] = engine
            return result
        except (RuntimeError, asyncpg.TooManyConnectionsError) as exc:
            refused = isinstance(exc, asyncpg.TooManyConnectionsError) or (
                "TooManyConnectionsError" in str(exc)
            )
            if not refused or attempt == _ATTEMPTS:
                raise
            _say(f"{what}: PostgreSQL refused a connection (shared server full); run again")
    raise AssertionError("unreachable")


def _continuous_rows(plan: Plan) -> int:
    # Each side changes rate * duration distinct records, and the two sets differ.
    return int(2 * plan.continuous_rate * plan.continuous_duration_s * 1.1) + 100


def _settings_used() -> dict[str, Any]:
    # The services get no TABLESYNC_* variable but their addresses (see
    # Deployment.environment): every other setting is the default.
    api = ApiSettings(base_url="")
    return {
        "sync": SyncSettings().model_dump(mode="json"),
        "api": {"page_size": api.page_size, "batch_size": api.batch_size},
        "emulator_requests_per_window": f"{EMULATOR_BUDGET} (raised: the bench measures tablesync)",
        "processes": "each emulator and each service in its own process (see each bench)",
    }


async def run_benches(
    plan: Plan,
    selected: Sequence[str],
    infra: Infra,
    *,
    out: Path = RESULTS,
    keep_logs: bool = False,
) -> list[Result]:
    context = {
        "machine": machine_info(),
        "versions": await versions(
            Settings(kafka_bootstrap_servers=infra.kafka, database_url=infra.dsn)
        ),
        "plan": asdict(plan),
        "settings": _settings_used(),
    }
    results: list[Result] = []

    def done(result: Result) -> None:
        results.append(result)
        path = write_result(result, out, smoke=plan.smoke)
        _say(render_table(result))
        _say(f"(written to {path})\n")

    workdir = Path(tempfile.mkdtemp(prefix="tablesync-bench-limit-"))
    try:
        if "fullsync" in selected or "limit" in selected:
            for result in await _fullsync_and_limit(
                plan, selected, infra, context, workdir, keep_logs
            ):
                done(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "apilimits" in selected:
        for result in await _apilimits(plan, infra, context, keep_logs):
            done(result)
    if "continuous" in selected:
        done(await _continuous(plan, infra, context, keep_logs))
    if "memory" in selected:
        done(await _memory(plan, infra, context, keep_logs))
    if "profile" in selected:
        done(await _profile(plan, infra, context, keep_logs))
    return results


async def _fullsync_and_limit(
    plan: Plan,
    selected: Sequence[str],
    infra: Infra,
    context: dict[str, Any],
    workdir: Path,
    keep_logs: bool,
) -> list[Result]:
    """Full sync and limit alternate, so that each ratio compares two runs made
    under the same load of the machine."""
    sync_runs: list[dict[str, Any]] = []
    limit_runs: list[dict[str, Any]] = []
    templates: Templates | None = None
    records = 2 * plan.records_per_table
    try:
        if "fullsync" in selected:
            _say(f"fullsync: seeding {plan.records_per_table:,} customers and contacts…")
            templates = await make_templates(infra, plan.records_per_table, "fs")
        for rep in range(plan.repeats):
            if templates is not None:
                _say(f"fullsync: run {rep + 1}/{plan.repeats}…")
                sync_runs.append(
                    await _attempt(
                        "fullsync",
                        partial(fullsync.run_once, infra, templates, keep_logs=keep_logs),
                    )
                )
                records = int(sync_runs[-1]["figures"]["records"])
            _say(f"limit: run {rep + 1}/{plan.repeats} ({records:,} records)…")
            limit_runs.append(
                await _attempt("limit", partial(limit.run_once, infra, records, workdir))
            )
            if sync_runs:
                tablesync_rps = sync_runs[-1]["figures"]["e2e_rps"]
                ceiling = limit_runs[-1]["figures"]["limit_rps"]
                sync_runs[-1]["figures"]["limit_rps"] = ceiling
                sync_runs[-1]["figures"]["ratio_to_limit"] = (
                    tablesync_rps / ceiling if tablesync_rps and ceiling else None
                )
    finally:
        if templates is not None:
            await templates.dbs.drop_all()
    out: list[Result] = []
    fs_context = {
        **context,
        "records_per_table": plan.records_per_table,
        "seeded": templates.seeded if templates else None,
        "mappings": fullsync.MAPPINGS,
        "directions": {
            m: fullsync.DIRECTIONS.get(m, "as in mappings/default.yaml") for m in fullsync.MAPPINGS
        },
    }
    if sync_runs:
        limit_figure = Figure("limit_rps", "limit (same run, see limit.json)", "records/s")
        out.append(
            Result("fullsync", [*fullsync.FIGURES, limit_figure, RATIO], sync_runs, fs_context)
        )
    out.append(Result("limit", limit.FIGURES, limit_runs, {**context, "batch": limit.BATCH}))
    return out


async def _apilimits(
    plan: Plan, infra: Infra, context: dict[str, Any], keep_logs: bool
) -> list[Result]:
    n = plan.apilimits_records_per_table
    _say(f"apilimits: seeding {n:,} customers and contacts…")
    templates = await make_templates(infra, n, "al")
    out = []
    try:
        for users in plan.apilimits_users:
            runs = []
            for rep in range(plan.repeats):
                _say(
                    f"apilimits: {users} user(s) per side, run {rep + 1}/{plan.repeats} "
                    "(the documented limits, scaled)…"
                )
                runs.append(
                    await _attempt(
                        "apilimits",
                        partial(
                            apilimits.run_once, infra, templates, users=users, keep_logs=keep_logs
                        ),
                    )
                )
            out.append(_apilimits_result(users, runs, n, context))
    finally:
        await templates.dbs.drop_all()
    return out


def _apilimits_result(
    users: int, runs: list[dict[str, Any]], n: int, context: dict[str, Any]
) -> Result:
    return Result(
        "apilimits" if users == 1 else f"apilimits-{users}users",
        apilimits.FIGURES,
        runs,
        {
            **context,
            "records_per_table": n,
            "mappings": fullsync.MAPPINGS,
            "emulators": apilimits.EMULATOR_ENV,
            "users_per_side": users,
            "users_note": (
                "both services limit each application user; tablesync signs in to each "
                "side as the users of ApiSettings (client_id and extra_clients), the "
                "emulators count limits per bearer token; the ceiling is that many users'"
            ),
            "documented": {
                "dataverse": "Service protection API limits: 6,000 requests and 1,200 s of "
                "execution time per user per 5-minute sliding window; 52 concurrent requests",
                "bc": "Working with API limits in Dynamics 365 Business Central; Operational "
                "limits for Business Central online: 6,000 requests per user per 5-minute "
                "sliding window; 5 concurrent requests, 95 queued; $batch of 100 at most",
            },
        },
    )


async def _continuous(plan: Plan, infra: Infra, context: dict[str, Any], keep_logs: bool) -> Result:
    rows = _continuous_rows(plan)
    _say(f"continuous: seeding {rows:,} customers…")
    templates = await make_templates(infra, rows, "ct")
    runs = []
    try:
        for rep in range(plan.repeats):
            _say(
                f"continuous: run {rep + 1}/{plan.repeats} "
                f"({plan.continuous_rate:g}/s per side for {plan.continuous_duration_s:g} s)…"
            )
            runs.append(
                await _attempt(
                    "continuous",
                    lambda: continuous.run_once(
                        infra,
                        templates,
                        rate=plan.continuous_rate,
                        duration_s=plan.continuous_duration_s,
                        keep_logs=keep_logs,
                    ),
                )
            )
    finally:
        await templates.dbs.drop_all()
    return Result(
        "continuous",
        continuous.FIGURES,
        runs,
        {
            **context,
            "customers": rows,
            "mappings": continuous.MAPPINGS,
            "rate_per_side": plan.continuous_rate,
            "duration_s": plan.continuous_duration_s,
            "checker_poll_s": continuous.POLL_S,
            "lag_read_every_s": continuous.LAG_EVERY_S,
            "capture_poll_interval_s": SyncSettings().poll_interval_s,
        },
    )


async def _memory(plan: Plan, infra: Infra, context: dict[str, Any], keep_logs: bool) -> Result:
    small, large = plan.memory_sizes
    _say(f"memory: seeding {small:,} and {large:,} customers…")
    templates = [await make_templates(infra, n, f"m{i}") for i, n in enumerate((small, large))]
    runs = []
    try:
        for rep in range(plan.repeats):
            _say(f"memory: run {rep + 1}/{plan.repeats}…")
            runs.append(
                await _attempt(
                    "memory", lambda: memory.run_once(infra, *templates, keep_logs=keep_logs)
                )
            )
    finally:
        for t in templates:
            await t.dbs.drop_all()
    return Result(
        "memory",
        memory.figures(small, large),
        runs,
        {
            **context,
            "sizes": [small, large],
            "mappings": memory.MAPPINGS,
            "process": memory.MEASURED,
        },
    )


async def _profile(plan: Plan, infra: Infra, context: dict[str, Any], keep_logs: bool) -> Result:
    n = plan.profile_records_per_table
    _say(f"profile: seeding {n:,} customers and contacts…")
    templates = await make_templates(infra, n, "pf")
    try:
        _say("profile: one full sync under py-spy…")
        run = await _attempt(
            "profile",
            lambda: fullsync.run_once(infra, templates, profile=True, keep_logs=keep_logs),
        )
    finally:
        await templates.dbs.drop_all()
    cpu: dict[str, float] = run["cpu_seconds"]
    run["figures"] = {
        "e2e_rps": run["figures"]["e2e_rps"],
        "cpu_services_s": sum(v for k, v in cpu.items() if k.startswith("tablesync ")),
        "cpu_emulators_s": sum(v for k, v in cpu.items() if k.startswith("emulator")),
        "cpu_postgres_s": sum(v for k, v in cpu.items() if k.startswith("postgres")),
        "cpu_kafka_s": next((v for k, v in cpu.items() if k.startswith("kafka")), None),
    }
    return Result("profile", PROFILE_FIGURES, [run], {**context, "records_per_table": n})


def render_profile(result: Result, limit_rows: int = 8) -> str:
    """The functions that took the most CPU in each profiled process."""
    run = result.runs[0]
    lines = [
        "== profile: top functions by CPU samples (self) ==",
        "(a leaf in asyncio/runners.py:Runner.run is native code under the event loop: uvloop's",
        " I/O and callbacks; asyncpg's Connection._do_execute/execute include its Cython protocol)",
    ]
    for name, profile in run["profiles"].items():
        lines.append(f"-- {name}: {profile['samples']} samples")
        for row in profile["top_self"][:limit_rows]:
            lines.append(f"   {100 * row['share']:5.1f}%  {row['function']}")
    for name, error in run["profile_errors"].items():
        lines.append(f"-- {name}: no profile: {error}")
    lines.append("-- PostgreSQL: statements seen active (share of active samples)")
    for row in run["postgres_top_statements"][:limit_rows]:
        lines.append(f"   {100 * row['share']:5.1f}%  [{row['database']}] {row['statement'][:110]}")
    lines.append("-- CPU seconds during the sync, per process")
    for name, seconds in sorted(run["cpu_seconds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"   {seconds:7.1f}  {name}")
    return "\n".join(lines)


def _infra() -> Infra:
    settings = Settings()
    status = localinfra.up(settings)
    if not status.usable:
        raise SystemExit(f"the local infrastructure is not usable: {status.to_dict()}")
    return Infra(settings.kafka_bootstrap_servers, settings.database_dsn())


async def _main_async(
    plan: Plan, selected: Sequence[str], infra: Infra, out: Path, keep_logs: bool
) -> None:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the run like Ctrl-C does, so every process is stopped and
    # every database and topic of the bench removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.monotonic()
    results = await run_benches(plan, selected, infra, out=out, keep_logs=keep_logs)
    _say("== summary ==")
    for result in results:
        _say(render_table(result))
        if result.name == "profile":
            _say(render_profile(result))
        _say("")
    _say(f"benches done in {time.monotonic() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="tablesync benchmarks on the local infrastructure."
    )
    parser.add_argument("--smoke", action="store_true", help="small sizes, one run each")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHES,
        metavar="NAME",
        help=f"run only this bench (repeatable): {', '.join(BENCHES)}",
    )
    parser.add_argument("--repeat", type=int, help="runs of each bench (default: 3, smoke: 1)")
    parser.add_argument(
        "--records",
        type=int,
        help="full sync, profile and apilimits: customers (= contacts) per table",
    )
    parser.add_argument(
        "--users",
        help="apilimits: application users per side, comma-separated (default: 1,3)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--keep-logs", action="store_true", help="keep every process's log")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.repeat:
        plan = replace(plan, repeats=args.repeat)
    if args.records:
        plan = replace(
            plan,
            records_per_table=args.records,
            profile_records_per_table=args.records,
            apilimits_records_per_table=args.records,
        )
    if args.users:
        plan = replace(
            plan, apilimits_users=tuple(int(u) for u in args.users.split(",") if u.strip())
        )
    selected = args.only or list(BENCHES)
    infra = _infra()
    try:
        asyncio.run(_main_async(plan, selected, infra, args.out, args.keep_logs))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench stopped; its processes, databases and topics are removed")
