"""``/livez`` and ``/readyz`` of one process on ``TABLESYNC_HEALTH__PORT``: what
Kubernetes probes and compose healthchecks ask (``tablesync health``).

200 when live or ready, 503 when not; the body says why, check by check and
loop by loop. No token: the answers carry no records and no secrets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import orjson
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tablesync.admin.listen import bind
from tablesync.errors import ConfigError
from tablesync.runtime.health import Health, HealthReport

__all__ = ["HealthServer", "health_app", "health_response"]

log = structlog.get_logger()


def health_response(report: HealthReport) -> Response:
    return Response(
        orjson.dumps(report.as_dict()),
        200 if report.ok else 503,
        media_type="application/json",
    )


def health_app(health: Health) -> Starlette:
    async def livez(request: Request) -> Response:
        return health_response(health.live())

    async def readyz(request: Request) -> Response:
        return health_response(health.ready())

    return Starlette(routes=[Route("/livez", livez), Route("/readyz", readyz)])


class _Server(uvicorn.Server):
    # The process's stop event rules, not uvicorn's own signal handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    def __init__(self, health: Health, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._app = health_app(health)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            sock = bind(self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"the health server cannot listen on {self.host}:{self.port}: {exc.strerror} "
                "(TABLESYNC_HEALTH__HOST / TABLESYNC_HEALTH__PORT)"
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, lifespan="off", log_config=None, log_level="warning", access_log=False
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stopped = asyncio.create_task(stop.wait())
        log.info("health_server_started", url=f"http://{self.host}:{self.port}")
        try:
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            stopped.cancel()
            await asyncio.gather(serving, stopped, return_exceptions=True)
            sock.close()
        error = serving.exception() if serving.done() and not serving.cancelled() else None
        if error is not None:
            raise error
