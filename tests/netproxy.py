"""A TCP proxy a test can cut and restore: network faults on real sockets
(what asyncpg's ``tests/test_adversity.py`` does), not a mocked driver.

``TcpProxy(target_port)`` owns a free local port. Nothing listens there
until ``listen()``; ``cut()`` drops every connection and stops listening,
so the next ones are refused, as with a server that went away."""

from __future__ import annotations

import asyncio
import contextlib

from tablesync.localinfra.network import free_ports

__all__ = ["TcpProxy"]

_CHUNK = 1 << 16


class TcpProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.host = "127.0.0.1"
        self.port = free_ports(1)[0]
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def cut(self) -> None:
        """Stops listening and drops every connection at once (no goodbye)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def close(self) -> None:
        await self.cut()

    async def __aenter__(self) -> TcpProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(_CHUNK):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            with contextlib.suppress(OSError, RuntimeError):
                sink.close()
