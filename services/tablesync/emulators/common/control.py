"""The control API under ``/_emulator`` for tests and the fault suite (not part of either
documented API).

    GET    /_emulator/stats      request counters; under the real limits also
                                 "real_limits": {"execution_s", "records_written",
                                 "queued", "in_flight", "waiting", "admitted_by_user"}
    DELETE /_emulator/stats      zero them
    POST   /_emulator/faults     {"status": 503|429|500|502|504, "count": N | "for_seconds": S,
                                  "retry_after": seconds}
    GET    /_emulator/faults     the active fault, or null
    DELETE /_emulator/faults     clear it
    GET    /_emulator/config     the tunables below
    PATCH  /_emulator/config     {"max_page_size", "requests_per_window", "window_s",
                                  "change_tracking": {"<entity set>": true|false},
                                  "change_retention_s",
                                  "real_limits": null | {"concurrent_requests",
                                  "queued_requests", "latency_ms", "record_cost_ms",
                                  "execution_s_per_window" (null: none), "dop_hint"}}
                                 real_limits null turns them off; an object turns them
                                 on (or changes them), each key left out taking the
                                 documented value of this side for the window
                                 (``RealLimits.documented``). Any change of the limits
                                 counts every user's budget afresh.
    POST   /_emulator/change-tracking/expire
                                 every delta token issued until now is answered as expired
    POST   /_emulator/short-listing {"share": 0 < S <= 1, "for_seconds": T}
                                 for T seconds, listings of ids alone ($select=<key>, no
                                 $filter: what a deletion scan reads) leave out about S of
                                 the rows, the same ones on every page; every other read
                                 still finds them (see listing.py)
    GET    /_emulator/short-listing {"share", "seconds_left", "hidden": rows left out so
                                 far}, also once it is over; or null
    DELETE /_emulator/short-listing clear it
    POST   /_emulator/reset      empty every table (the baseline rows come back)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tablesync.emulators.common.guard import CONTROL_PREFIX
from tablesync.emulators.common.limiter import RealLimits
from tablesync.emulators.common.listing import ShortListing
from tablesync.emulators.common.runtime import Runtime
from tablesync.emulators.common.schema import truncate_all

__all__ = ["control_routes"]


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def _problem(message: str) -> Response:
    return _json({"error": {"code": "BadRequest", "message": message}}, 400)


async def _body(request: Request) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _number(payload: dict[str, Any], name: str, *, integer: bool) -> float | int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _tracking(runtime: Runtime, value: object) -> dict[str, bool]:
    if value is None:
        return {}
    tracked = {spec.entity.entity_set for spec in runtime.service.specs if spec.change_log}
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ValueError('change_tracking is {"<entity set>": true | false, ...}')
    unknown = sorted(set(value) - tracked)
    if unknown:
        raise ValueError(f"no change tracking to set on {', '.join(unknown)}")
    return {str(k): bool(v) for k, v in value.items()}


def _real_limits(runtime: Runtime, value: object, window_s: float) -> RealLimits | None:
    """``real_limits`` of a PATCH: None turns them off; each key of an object left out
    keeps its value, or takes the documented one when they were off."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("real_limits is null or an object")
    known = {
        "concurrent_requests",
        "queued_requests",
        "latency_ms",
        "record_cost_ms",
        "execution_s_per_window",
        "dop_hint",
    }
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"real_limits has no {', '.join(unknown)}")
    base = runtime.protection.real
    if base is None:
        _, base = RealLimits.documented(runtime.service.side, window_s=window_s)
    concurrent = _number(value, "concurrent_requests", integer=True)
    queued = _number(value, "queued_requests", integer=True)
    latency = _number(value, "latency_ms", integer=False)
    cost = _number(value, "record_cost_ms", integer=False)
    hint = _number(value, "dop_hint", integer=True)
    execution = _number(value, "execution_s_per_window", integer=False)
    if concurrent is not None and concurrent < 1:
        raise ValueError("concurrent_requests must be at least 1")
    for name, number in (
        ("queued_requests", queued),
        ("latency_ms", latency),
        ("record_cost_ms", cost),
    ):
        if number is not None and number < 0:
            raise ValueError(f"{name} must not be negative")
    if execution is not None and execution <= 0:
        raise ValueError("execution_s_per_window must be positive (null: no budget)")
    if hint is not None and hint < 1:
        raise ValueError("dop_hint must be at least 1")
    # A key given as null clears the value (no budget, no hint); a key left out keeps it.
    execution_s = base.execution_s
    if "execution_s_per_window" in value:
        execution_s = None if execution is None else float(execution)
    dop_hint = base.dop_hint
    if "dop_hint" in value:
        dop_hint = None if hint is None else int(hint)
    return RealLimits(
        concurrent=base.concurrent if concurrent is None else int(concurrent),
        queued=base.queued if queued is None else int(queued),
        latency_s=base.latency_s if latency is None else float(latency) / 1000,
        record_cost_s=base.record_cost_s if cost is None else float(cost) / 1000,
        execution_s=execution_s,
        dop_hint=dop_hint,
    )


def control_routes(runtime: Runtime) -> list[Route]:
    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            runtime.stats.reset()
            return Response(status_code=204)
        snapshot = runtime.stats.snapshot()
        if runtime.protection.real is not None:
            active, waiting = runtime.protection.in_flight()
            snapshot["real_limits"] = {
                **runtime.stats.real_snapshot(),
                "in_flight": active,
                "waiting": waiting,
                "admitted_by_user": runtime.protection.admitted_by_user(),
            }
        return _json(snapshot)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return _json(runtime.faults.describe())
        if request.method == "DELETE":
            runtime.faults.clear()
            return Response(status_code=204)
        payload = await _body(request)
        if payload is None:
            return _problem("the body must be a JSON object")
        try:
            status = _number(payload, "status", integer=True)
            count = _number(payload, "count", integer=True)
            seconds = _number(payload, "for_seconds", integer=False)
            retry_after = _number(payload, "retry_after", integer=True)
            if status is None:
                raise ValueError("status is required")
            runtime.faults.inject(
                int(status),
                count=None if count is None else int(count),
                for_seconds=seconds,
                retry_after=1 if retry_after is None else int(retry_after),
            )
        except ValueError as exc:
            return _problem(str(exc))
        return _json(runtime.faults.describe(), 201)

    async def config(request: Request) -> Response:
        if request.method == "PATCH":
            payload = await _body(request)
            if payload is None:
                return _problem("the body must be a JSON object")
            try:
                page = _number(payload, "max_page_size", integer=True)
                budget = _number(payload, "requests_per_window", integer=True)
                window = _number(payload, "window_s", integer=False)
                if page is not None and page < 1:
                    raise ValueError("max_page_size must be at least 1")
                if budget is not None and budget < 1:
                    raise ValueError("requests_per_window must be at least 1")
                if window is not None and window <= 0:
                    raise ValueError("window_s must be positive")
                retention = _number(payload, "change_retention_s", integer=False)
                if retention is not None and retention < 0:
                    raise ValueError("change_retention_s must not be negative")
                tracking = _tracking(runtime, payload.get("change_tracking"))
                real: RealLimits | None = None
                if "real_limits" in payload:
                    window_s = runtime.protection.window_s if window is None else float(window)
                    real = _real_limits(runtime, payload["real_limits"], window_s)
            except ValueError as exc:
                return _problem(str(exc))
            for name, enabled in tracking.items():
                if enabled:
                    runtime.tuning.untracked.discard(name)
                else:
                    runtime.tuning.untracked.add(name)
            if retention is not None:
                runtime.tuning.change_retention_s = float(retention)
            if page is not None:
                runtime.tuning.max_page_size = int(page)
            if budget is not None or window is not None:
                runtime.protection.configure(
                    None if budget is None else int(budget),
                    None if window is None else float(window),
                )
            if "real_limits" in payload:
                runtime.protection.enforce(real)
        protection = runtime.protection
        return _json(
            {
                "max_page_size": runtime.tuning.max_page_size,
                "requests_per_window": protection.budget,
                "window_s": protection.window_s,
                "real_limits": None if protection.real is None else protection.real.describe(),
                "change_tracking": {
                    spec.entity.entity_set: spec.entity.entity_set not in runtime.tuning.untracked
                    for spec in runtime.service.specs
                    if spec.change_log
                },
                "change_retention_s": runtime.tuning.change_retention_s,
            }
        )

    async def expire(request: Request) -> Response:
        runtime.tuning.expired_before = datetime.now(UTC)
        return Response(status_code=204)

    async def short_listing(request: Request) -> Response:
        if request.method == "GET":
            short = runtime.tuning.short_listing
            return _json(None if short is None else short.describe())
        if request.method == "DELETE":
            runtime.tuning.short_listing = None
            return Response(status_code=204)
        payload = await _body(request)
        if payload is None:
            return _problem("the body must be a JSON object")
        try:
            share = _number(payload, "share", integer=False)
            seconds = _number(payload, "for_seconds", integer=False)
            if share is None or not 0 < share <= 1:
                raise ValueError("share must be a number above 0 and at most 1")
            if seconds is None or seconds <= 0:
                raise ValueError("for_seconds must be positive")
        except ValueError as exc:
            return _problem(str(exc))
        short = ShortListing(float(share), time.monotonic() + float(seconds))
        runtime.tuning.short_listing = short
        return _json(short.describe(), 201)

    async def reset(request: Request) -> Response:
        async with runtime.pool.acquire() as conn, conn.transaction():
            await truncate_all(conn, runtime.service.specs)
            await runtime.service.reset(conn)
            await runtime.service.prepare(conn)
        return Response(status_code=204)

    return [
        Route(f"{CONTROL_PREFIX}/stats", stats, methods=["GET", "DELETE"]),
        Route(f"{CONTROL_PREFIX}/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route(f"{CONTROL_PREFIX}/config", config, methods=["GET", "PATCH"]),
        Route(f"{CONTROL_PREFIX}/change-tracking/expire", expire, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/short-listing", short_listing, methods=["GET", "POST", "DELETE"]),
        Route(f"{CONTROL_PREFIX}/reset", reset, methods=["POST"]),
    ]
