"""The admin server's ASGI app: the endpoints of ``routes``, bearer auth in
front of them, JSON for every refusal (the application layer's through
``routes.problem_of``), and the dashboard's static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tablesync import __version__
from tablesync.admin.auth import BearerAuth
from tablesync.admin.openapi import openapi_document
from tablesync.admin.routes import (
    ENDPOINTS,
    STATIC_DIR,
    UNAVAILABLE_DATABASE,
    AdminContext,
    Endpoint,
    Problem,
    problem_of,
)
from tablesync.errors import ConfigError, TablesyncError

__all__ = ["create_app"]

log = structlog.get_logger()


def _json(
    status: int, content: dict[str, object], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def _handle(e: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def call(request: Request) -> Response:
        ctx: AdminContext = request.app.state.admin
        try:
            return await e.handler(ctx, request)
        except Problem as p:
            return p.response()
        except TablesyncError as exc:
            problem = problem_of(exc)
            if problem is None:
                raise
            return problem.response()
        except UNAVAILABLE_DATABASE as exc:
            log.warning("admin_database_unavailable", path=e.path, error=str(exc))
            return _json(503, {"error": f"the state database cannot be reached: {exc}"})
        except (KafkaError, TimeoutError) as exc:
            log.warning("admin_kafka_unavailable", path=e.path, error=f"{type(exc).__name__}")
            return _json(503, {"error": f"Kafka cannot be reached: {type(exc).__name__} {exc}"})

    call.__name__ = e.handler.__name__
    return call


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such path: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return _json(exc.status_code, {"error": message}, dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error(
        "admin_request_failed",
        method=request.method,
        path=request.url.path,
        error=f"{type(exc).__name__}: {exc}",
    )
    return _json(500, {"error": "internal error; the admin server's log has the details"})


def create_app(ctx: AdminContext, token: str) -> Starlette:
    if not token:
        raise ConfigError("the admin token is empty: set TABLESYNC_ADMIN_TOKEN")
    routes: list[BaseRoute] = [
        Route(e.path, _handle(e), methods=[e.method], name=e.handler.__name__) for e in ENDPOINTS
    ]
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BearerAuth, token=token)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.admin = ctx
    app.state.openapi = openapi_document(
        ENDPOINTS, title="tablesync admin API", version=__version__
    )
    return app
