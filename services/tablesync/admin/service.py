"""The admin service: the admin API, the dashboard and ``/metrics`` on uvicorn,
plus the lag sampler behind the dashboard's chart, run like every other
service as ``run(stop)``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from tablesync.adapters.kafka import KafkaConnection, Topics
from tablesync.adapters.kafka.lag import LagReader
from tablesync.admin.app import create_app
from tablesync.admin.auth import insecure_bind
from tablesync.admin.lagwatch import LagMonitor
from tablesync.admin.listen import bind
from tablesync.admin.routes import AdminContext
from tablesync.application import Operator
from tablesync.errors import ConfigError
from tablesync.runtime.health import Health
from tablesync.settings import DEFAULT_TOKEN, Settings

__all__ = ["AdminService"]

log = structlog.get_logger()

_SHUTDOWN_GRACE_S = 3


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's stop event rules,
    as for every other service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminService:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: Any,
        operator: Operator,
        topics: Topics,
        required: bool = True,
        sample_every_s: float = 15.0,
        health: Health | None = None,
    ) -> None:
        """``required=False`` (``run all``): a port that cannot be bound is logged and
        the other services go on; ``run admin`` fails instead. Every operation
        goes through ``operator``; ``pool`` serves the dashboard's and the
        metrics' own reads."""
        self.settings = settings
        self.host = settings.admin_host
        self.port = settings.admin_port
        self.required = required
        self.reader = LagReader(
            KafkaConnection.from_settings(settings), client_id="tablesync-admin"
        )
        self.lag = LagMonitor(
            self.reader,
            pool,
            topics,
            sample_every_s=sample_every_s,
            mappings=operator.stores.mappings,
        )
        self.app = create_app(
            AdminContext(pool, operator, self.lag, health), settings.admin_token.get_secret_value()
        )
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> socket.socket | None:
        refused = insecure_bind(
            self.host, self.settings.admin_token.get_secret_value(), DEFAULT_TOKEN
        )
        if refused is not None:
            if self.required:
                raise ConfigError(refused)
            log.error("admin_not_started", host=self.host, port=self.port, error=refused)
            return None
        try:
            sock = bind(self.host, self.port)
        except OSError as exc:
            reason = f"the admin server cannot listen on {self.host}:{self.port}: {exc.strerror}"
            if self.required:
                raise ConfigError(reason) from None
            log.error("admin_not_started", host=self.host, port=self.port, error=exc.strerror)
            return None
        self.port = sock.getsockname()[1]
        return sock

    async def run(self, stop: asyncio.Event) -> None:
        sock = self._bind()
        if sock is None:
            return
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        sampler = asyncio.create_task(self.lag.run(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            while not server.started and not serving.done():
                await asyncio.wait([serving, stopped], timeout=0.05)
            if server.started:
                self.started.set()
                log.info("admin_started", url=self.url)
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            stopped.cancel()
            sampler.cancel()
            await asyncio.gather(serving, sampler, stopped, return_exceptions=True)
            await self.reader.close()
            sock.close()
            log.info("admin_stopped")
        error = serving.exception() if serving.done() and not serving.cancelled() else None
        if error is not None:
            raise error
