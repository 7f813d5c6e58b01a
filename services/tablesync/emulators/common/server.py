"""Serving an emulator app with uvicorn: in the foreground (CLI) or in the background of
the current event loop on a free port (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

__all__ = ["BackgroundServer", "run"]


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        # Clients keep connections open across pages and batches.
        timeout_keep_alive=30,
    )


def run(app: ASGIApp, host: str, port: int) -> None:
    """Serve in the foreground until the process is told to stop (uvloop when installed)."""
    uvicorn.Server(_config(app, host, port)).run()


class BackgroundServer:
    """``async with BackgroundServer(app) as url:`` — the app on a free port until exit."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        # proto must be TCP for asyncio to set TCP_NODELAY on accepted connections; without
        # it a small response waits ~40 ms on the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_config(app, host, self.port))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the emulator stopped while starting (see its log)")
            await asyncio.sleep(0.02)
        return self.url

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._sock.close()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
