"""Serving the API beside the daemon: uvicorn on a socket bound before anything starts, without
uvicorn's own signal handlers (SIGTERM and SIGINT belong to the daemon, which stops the server
last). `HttpApi` is what the daemon runs as its `Companion`."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from market_data.api.app import create_app
from market_data.api.view import DaemonView


class ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port now, so a taken port is reported before anything starts (OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # uvicorn's own default: a burst of clients (hundreds at once) is queued, not refused.
    sock = socket.create_server((host, port), family=family, backlog=2048)
    # Connections accepted here inherit it: with Nagle on, the end of each response on a
    # kept-alive connection waited for the client's delayed ACK, ~40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def build_server(daemon: DaemonView) -> ApiServer:
    config = uvicorn.Config(
        create_app(daemon),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return ApiServer(config)


class HttpApi:
    """The HTTP API on an already bound socket (which it closes once served)."""

    def __init__(self, daemon: DaemonView, sock: socket.socket) -> None:
        self._sock = sock
        self._server = build_server(daemon)
        port = sock.getsockname()[1]
        self.address = f"http://{daemon.settings.api_host}:{port}"

    async def serve(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            self._sock.close()

    def stop(self, *, force: bool = False) -> None:
        self._server.should_exit = True
        if force:
            self._server.force_exit = True
