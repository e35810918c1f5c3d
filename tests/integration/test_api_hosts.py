"""The API answers only the Host names it serves (API_ALLOWED_HOSTS), and /status names the
database backend, not where the database is.

In-process (httpx.ASGITransport, which sends the base URL's host as Host) on a real SQLite store,
and once over a real socket through uvicorn, where the Host header is whatever the client sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_data.api.app import create_app
from market_data.api.server import bind, build_server
from market_data.config import load_settings
from market_data.daemon import Daemon

READ_PATHS = ("/health", "/status", "/gaps", "/jobs", "/metrics", "/openapi.json")


@contextlib.asynccontextmanager
async def built_daemon(tmp_path: Path, **settings: Any) -> AsyncIterator[Daemon]:
    daemon = Daemon(
        load_settings(
            env_file=None,
            database_url=f"sqlite:///{tmp_path / 'hosts.db'}",
            bitfinex_symbols="BTCUSD",
            bitfinex_timeframes="1m",
            bitfinex_rest_url="http://127.0.0.1:9",
            bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
            **settings,
        )
    )
    await daemon.store.upgrade()
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    try:
        yield daemon
    finally:
        await daemon.rest.aclose()
        await daemon.store.close()


async def _status_for(daemon: Daemon, host: str) -> int:
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        return (await client.get("/status")).status_code


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8100", "localhost", "LOCALHOST:8100", "[::1]", "[::1]:8100"]
)
async def test_the_loopback_names_are_served_by_default(tmp_path: Path, host: str) -> None:
    async with built_daemon(tmp_path) as daemon:
        assert await _status_for(daemon, host) == 200


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "attacker.example:8100",
        "127.0.0.1.attacker.example",
        "localhost.",
        "0.0.0.0",
        "[::2]",
        "127.0.0.2",
    ],
)
async def test_other_hosts_get_400_on_every_read_endpoint(tmp_path: Path, host: str) -> None:
    async with built_daemon(tmp_path) as daemon:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            for path in READ_PATHS:
                response = await client.get(path)
                assert response.status_code == 400, (host, path, response.text)
                assert "candle" not in response.text


async def test_api_host_is_served_too(tmp_path: Path) -> None:
    async with built_daemon(tmp_path, api_host="md.lan") as daemon:
        assert await _status_for(daemon, "md.lan:8100") == 200
        assert await _status_for(daemon, "localhost") == 200
        assert await _status_for(daemon, "other.lan") == 400


async def test_behind_a_reverse_proxy_the_public_name_is_configured(tmp_path: Path) -> None:
    async with built_daemon(tmp_path, api_allowed_hosts="md.example.com,*.corp.example") as daemon:
        assert await _status_for(daemon, "md.example.com") == 200
        assert await _status_for(daemon, "md.example.com:443") == 200
        assert await _status_for(daemon, "a.corp.example") == 200
        # The setting replaces the default list.
        assert await _status_for(daemon, "localhost") == 400


async def test_status_names_the_backend_not_the_database_path(tmp_path: Path) -> None:
    async with built_daemon(tmp_path) as daemon:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = (await client.get("/status")).json()
    assert body["database"] == "sqlite"
    assert "hosts.db" not in str(body)
    assert str(tmp_path) not in str(body)


async def test_a_real_socket_refuses_a_rebound_name(tmp_path: Path) -> None:
    async with built_daemon(tmp_path) as daemon:
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = build_server(daemon)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async with asyncio.timeout(10):
                    while not server.started:  # uvicorn sets it once listening; no event to await
                        await asyncio.sleep(0.01)
                own = await client.get("/status")
                rebound = await client.get("/status", headers={"Host": f"rebind.example:{port}"})
        finally:
            server.should_exit = True
            await serving
    assert own.status_code == 200, own.text
    assert rebound.status_code == 400, rebound.text
