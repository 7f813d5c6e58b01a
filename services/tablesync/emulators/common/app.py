"""The ASGI app of one emulator: the service's roots, the control API, the guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tablesync.emulators.common.control import control_routes
from tablesync.emulators.common.guard import Guard
from tablesync.emulators.common.messages import ApiRequest, parse_query
from tablesync.emulators.common.runtime import Runtime, handle_safely
from tablesync.emulators.common.schema import ensure_database, ensure_schema

__all__ = ["build_app", "request_headers"]

log = structlog.get_logger()

_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lower-cased; a repeated header (two ``Prefer``) joined by ``, ``."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _endpoint(runtime: Runtime, root: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        scope = request.scope
        host = request.headers.get("host") or f"{scope['server'][0]}:{scope['server'][1]}"
        raw_query = scope["query_string"].decode("latin-1")
        api_request = ApiRequest(
            method=request.method,
            path=request.path_params.get("path", ""),
            query=parse_query(raw_query),
            raw_query=raw_query,
            headers=request_headers(scope["headers"]),
            body=await request.body(),
            service_root=f"{scope['scheme']}://{host}{root}",
            root=root,
        )
        response = await handle_safely(runtime.service, api_request, runtime.db)
        return Response(response.body, response.status, headers=dict(response.headers))

    return endpoint


def build_app(runtime: Runtime) -> ASGIApp:
    """The emulator app; its lifespan creates the database, the tables and the pool."""
    config = runtime.config
    service = runtime.service

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await ensure_database(config.dsn)
        pool = await asyncpg.create_pool(
            config.dsn,
            min_size=2,
            max_size=config.pool_size,
            command_timeout=120,
            # A table a sync is filling grows faster than its statistics: with
            # the row count of when it was empty, the planner scans it whole for
            # every keyed look-up and a load turns quadratic. Every look-up the
            # API serves has an index; scans remain for filters without one.
            server_settings={"enable_seqscan": "off", "plan_cache_mode": "force_custom_plan"},
        )
        try:
            async with pool.acquire() as conn:
                await ensure_schema(conn, service.specs)
                await service.prepare(conn)
            runtime.pool = pool
            log.info("emulator_started", side=service.side, roots=list(service.roots))
            yield
        finally:
            runtime.pool = None
            await pool.close()

    routes = control_routes(runtime)
    for root in service.roots:
        endpoint = _endpoint(runtime, root)
        routes.append(Route(root, endpoint, methods=_METHODS))
        routes.append(Route(root + "/{path:path}", endpoint, methods=_METHODS))
    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, runtime)
