"""A TCP forwarder in front of the PostgreSQL server that a test can cut and restore: one
member's connection to the database goes dead while the others' stay up (a cable pulled)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit


class TcpCut:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.url = ""

    @classmethod
    @contextlib.asynccontextmanager
    async def to_url(cls, url: str) -> AsyncIterator[TcpCut]:
        """A forwarder to the server of `url`; `.url` is `url` through it."""
        parts = urlsplit(url)
        forwarder = cls(parts.hostname or "127.0.0.1", parts.port or 5432)
        forwarder._server = await asyncio.start_server(forwarder._accept, "127.0.0.1", 0)
        port = forwarder._server.sockets[0].getsockname()[1]
        user = f"{parts.username}@" if parts.username else ""
        forwarder.url = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
        try:
            yield forwarder
        finally:
            forwarder.cut()
            forwarder._server.close()
            for task in list(forwarder._pipes):
                task.cancel()
            await asyncio.gather(*forwarder._pipes, return_exceptions=True)

    def cut(self) -> None:
        """Drop every connection, and refuse new ones until `restore()`."""
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()
