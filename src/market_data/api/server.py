"""Serving the API inside the daemon: uvicorn on a socket the daemon bound, without uvicorn's own
signal handlers (SIGTERM and SIGINT belong to the daemon, which stops the server last)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from market_data.daemon import Daemon


class ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port now, so a taken port is reported before anything starts (OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # uvicorn's own default: a burst of clients (hundreds at once) is queued, not refused.
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setblocking(False)
    return sock


def build_server(daemon: Daemon) -> ApiServer:
    from market_data.api.app import create_app

    config = uvicorn.Config(
        create_app(daemon), log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return ApiServer(config)
