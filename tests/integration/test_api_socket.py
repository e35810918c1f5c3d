"""The API's own listening socket: responses leave at once on a kept-alive connection.

Without TCP_NODELAY on the socket the daemon binds itself (api/server.py `bind`), Nagle's
algorithm held the end of each response until the client's delayed ACK: about 40 ms added to
every request on a kept-alive connection (the dashboard's, the bench's), whatever the endpoint.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from market_data.api.server import bind, build_server
from tests.integration.test_api_hosts import built_daemon


async def test_served_connections_have_nagle_off(tmp_path: Path) -> None:
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
                answers = [await client.get("/health") for _ in range(3)]
                served = [
                    conn.transport.get_extra_info("socket")
                    for conn in server.server_state.connections
                ]
                nodelay = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in served]
        finally:
            server.should_exit = True
            await serving
    assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
    assert len(nodelay) == 1  # the three requests shared one kept-alive connection
    assert nodelay[0] != 0
