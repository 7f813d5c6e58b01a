"""Bench ``apilimits``: the full sync of ``fullsync`` against emulators that enforce
each service's documented per-user limits, and how close tablesync comes to the
ceiling those limits allow.

The limits (``tablesync.emulators.common.limiter``, where the pages are cited):
Dataverse "Service protection API limits" — 6,000 requests and 1,200 s of combined
execution time per user in a 5-minute sliding window, 52 concurrent requests; Business
Central "Working with API limits in Dynamics 365 Business Central" and "Operational
limits for Business Central online" — 6,000 requests per user in a 5-minute sliding
window, 5 processed at once with 95 more queued. A run does not last five minutes
times several, so the window is scaled to ``WINDOW_S`` and every budget by the same
factor: the ceiling per second is the documented one. Concurrency is not scaled.
Every request also takes ``LATENCY_MS`` and every record it writes ``RECORD_COST_MS``
of server time, inside its slot; on Dataverse that time counts against the
execution budget.

Application users: both services count these limits per user, so a run may sign in
to each side as several users (``--users``; ``extra_clients`` in the services'
settings, ``extra_tokens`` in the emulators'), each with the budgets and concurrency
above. The ceiling is then the one of that many users, the connector's spreading of
requests over them taken as even: each budget and the concurrency times the users.

The ceiling is the shortest time the limits allow for the work the run did, read from
the emulators' counters. Per side, with R requests admitted (not answered 429), E
seconds of execution (the time requests held a slot), a budget of B requests and X
execution seconds per window W, and C requests at once:

Per side, with U users, B, X and C below stand for U times one user's.

- requests:    max(0, R - B) * W / B  (a sliding window lets B through at once, then
  B per W: a true bound even for a run shorter than a few windows);
- execution:   max(0, E - X) * W / X  (Dataverse only);
- concurrency: E / C.

The run needs at least the largest of them on either side; the ceiling is the run's
records over that time. The steady-rate times (R * W / B, E * W / X: the documented
rates per second applied to the whole run) are reported beside them. Achieved is records
over capture -> last coupling, as in ``fullsync``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench import fullsync
from bench.data import Templates, bench_mappings
from bench.deploy import Infra, deployment
from bench.report import Figure, at_least

__all__ = [
    "EMULATOR_ENV",
    "FIGURES",
    "LATENCY_MS",
    "RECORD_COST_MS",
    "WINDOW_S",
    "Ceiling",
    "SideLimits",
    "SideWork",
    "ceiling",
    "run_once",
]

SIDES = ("bc", "dataverse")
WINDOW_S = 30.0
"""The documented 5 minutes scaled by 1/10; budgets scale with it."""
LATENCY_MS = 50.0
RECORD_COST_MS = 2.0
EMULATOR_ENV = {
    "TABLESYNC_EMULATOR__REAL_LIMITS": "true",
    "TABLESYNC_EMULATOR__WINDOW_S": f"{WINDOW_S:g}",
    "TABLESYNC_EMULATOR__LATENCY_MS": f"{LATENCY_MS:g}",
    "TABLESYNC_EMULATOR__RECORD_COST_MS": f"{RECORD_COST_MS:g}",
}

FIGURES = [
    Figure(
        "fraction_of_ceiling",
        "achieved / ceiling of the real limits",
        "x",
        2,
        at_least(0.8, ">= 0.8"),
    ),
    Figure(
        "achieved_rps", "full sync under the real limits (capture -> last coupling)", "records/s"
    ),
    Figure("ceiling_rps", "ceiling the limits allow for the run's requests", "records/s"),
    Figure("ceiling_s", "  shortest time the limits allow", "s", 1),
    Figure("e2e_s", "  capture -> last coupling", "s", 1),
    Figure("records", "records synced", "records"),
    Figure("throttled", "429 answers, both sides", "responses"),
    Figure("users", "application users per side", "users"),
    Figure("users_used", "  users the emulators saw requests from (fewer side)", "users"),
    Figure("bc_in_flight", "  BC requests in flight, mean (execution s / e2e s)", "requests", 1),
    Figure(
        "dataverse_in_flight",
        "  Dataverse requests in flight, mean (execution s / e2e s)",
        "requests",
        1,
    ),
    *fullsync.API_FIGURES,
]


@dataclass(frozen=True, slots=True)
class SideLimits:
    """One user's limits on one side, as the emulator reports them."""

    requests_per_window: int
    window_s: float
    concurrent: int
    execution_s_per_window: float | None
    users: int = 1
    """Users the side's work is spread over, each with the limits above."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], users: int = 1) -> SideLimits:
        """From ``GET /_emulator/config`` of an emulator with the real limits on."""
        real = config["real_limits"]
        if real is None:
            raise ValueError("the emulator does not enforce the real limits")
        return cls(
            requests_per_window=int(config["requests_per_window"]),
            window_s=float(config["window_s"]),
            concurrent=int(real["concurrent_requests"]),
            execution_s_per_window=real["execution_s_per_window"],
            users=users,
        )


@dataclass(frozen=True, slots=True)
class SideWork:
    """What a run asked of one side."""

    requests: int
    """Admitted: not answered 429."""
    execution_s: float
    """The seconds its requests held a slot, added up."""


@dataclass(frozen=True, slots=True)
class Ceiling:
    records_per_s: float | None
    seconds: float
    binding: str
    """Which limit of which side needs ``seconds``."""
    needed: dict[str, dict[str, float]]
    """Per side, the seconds each limit needs (and the steady-rate ones)."""


def _needed(work: SideWork, limits: SideLimits) -> dict[str, float]:
    users = limits.users
    window, budget = limits.window_s, limits.requests_per_window * users
    needed = {
        "requests": max(0, work.requests - budget) * window / budget,
        "concurrency": work.execution_s / (limits.concurrent * users),
        "requests_steady": work.requests * window / budget,
    }
    execution = limits.execution_s_per_window
    if execution is not None:
        execution *= users
        needed["execution"] = max(0.0, work.execution_s - execution) * window / execution
        needed["execution_steady"] = work.execution_s * window / execution
    return {k: round(v, 3) for k, v in needed.items()}


def ceiling(records: float, sides: Mapping[str, tuple[SideWork, SideLimits]]) -> Ceiling:
    """The most records per second the limits allow for this work (see the module)."""
    needed = {side: _needed(work, limits) for side, (work, limits) in sides.items()}
    bounds = [
        (seconds, f"{side} {limit}")
        for side, by_limit in needed.items()
        for limit, seconds in by_limit.items()
        if not limit.endswith("_steady")
    ]
    seconds, binding = max(bounds, default=(0.0, "none"))
    return Ceiling(records / seconds if seconds > 0 else None, seconds, binding, needed)


async def run_once(
    infra: Infra, templates: Templates, *, users: int = 1, keep_logs: bool = False
) -> dict[str, Any]:
    """One full sync under the real limits, signed in to each side as ``users`` users."""
    async with deployment(
        infra,
        name="apilimits",
        bc_template=templates.bc,
        dv_template=templates.dataverse,
        emulator_env=EMULATOR_ENV,
        users=users,
        keep_logs=keep_logs,
    ) as dep:
        document = bench_mappings(fullsync.MAPPINGS, fullsync.DIRECTIONS)
        await dep.load_mappings(document)
        await dep.start_emulators()
        configs = {side: await dep.emulator_config(side) for side in SIDES}
        await dep.start_services(fullsync.SERVICES)
        await dep.wait_ready(fullsync.SERVICES, fullsync.MAPPINGS)
        run = await fullsync.measure(dep, document)
        by_user = {
            side: (await dep.emulator_stats(side))["real_limits"]["admitted_by_user"]
            for side in SIDES
        }
    figures = run["figures"]
    requests = run["emulator_requests"]
    sides = {
        side: (
            SideWork(
                requests[side]["total"] - requests[side]["throttled"],
                float(requests[side]["real_limits"]["execution_s"]),
            ),
            SideLimits.from_config(configs[side], users),
        )
        for side in SIDES
    }
    limit = ceiling(figures["records"], sides)
    achieved = figures["e2e_rps"]
    figures.update(
        {
            "achieved_rps": achieved,
            "ceiling_rps": limit.records_per_s,
            "ceiling_s": limit.seconds,
            "fraction_of_ceiling": achieved / limit.records_per_s
            if achieved and limit.records_per_s
            else None,
            "throttled": float(sum(requests[side]["throttled"] for side in SIDES)),
            "users": float(users),
            "users_used": float(min(sum(1 for n in by_user[side] if n) for side in SIDES)),
            **{
                f"{side}_in_flight": work.execution_s / figures["e2e_s"]
                if figures.get("e2e_s")
                else None
                for side, (work, _) in sides.items()
            },
        }
    )
    run["ceiling"] = {
        "binding": limit.binding,
        "seconds_needed": limit.needed,
        "work": {
            side: {"requests": work.requests, "execution_s": work.execution_s}
            for side, (work, _) in sides.items()
        },
    }
    run["admitted_by_user"] = by_user
    run["limits"] = {side: configs[side]["real_limits"] | _budget(configs[side]) for side in SIDES}
    return run


def _budget(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "requests_per_window": config["requests_per_window"],
        "window_s": config["window_s"],
    }
