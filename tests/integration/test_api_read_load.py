"""Heavy API reads cannot starve the daemon (issue 15, finding 2).

Reads are made slow for real: a PostgreSQL session holds an ACCESS EXCLUSIVE lock on `candles`,
so every /candles query waits in the server, holding its connection. Then many /candles arrive
at once. /health must still answer (200, the database not `down`: a watchdog would restart a
healthy daemon), the daemon must still write (its own pool), and the reads past the API's bound
must get 503 with Retry-After at once rather than queue until a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import Candle, SeriesKey

pytestmark = pytest.mark.postgres

M = 60_000
T0 = 1_767_225_600_000
BTC = SeriesKey("BTCUSD", "1m")
# More than the API runs and lets wait at once (api/read_gate.py: 8 + 256), as in the issue.
REQUESTS = 300


@pytest.fixture
async def daemon(fresh_database_url: Any) -> AsyncIterator[Daemon]:
    url = fresh_database_url("postgres")
    built = Daemon(
        load_settings(
            env_file=None,
            database_url=url,
            bitfinex_symbols="BTCUSD",
            bitfinex_timeframes="1m",
            bitfinex_rest_url="http://127.0.0.1:9",
            bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
        )
    )
    await built.store.upgrade()
    built.state.database_ready = True
    built.state.phase = "running"
    await built.store.upsert_candles(
        [
            Candle("BTCUSD", "1m", T0 + i * M, 100.0, 102.0, 98.0, 101.0, 1.0, True)
            for i in range(2_000)
        ]
    )
    try:
        yield built
    finally:
        await built.rest.aclose()
        await built.store.close()


async def _blocked_readers(admin: asyncpg.Connection, database: str) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
    )


async def test_health_and_writes_are_not_starved_by_reads(daemon: Daemon) -> None:
    url = daemon.settings.database_url
    database = url.rsplit("/", 1)[1]
    locker = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    transport = httpx.ASGITransport(app=create_app(daemon))
    params = {"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0), "limit": "10000"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as api:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        reads = [asyncio.create_task(api.get("/candles", params=params)) for _ in range(REQUESTS)]
        try:
            # Wait until the reads sit in the server, holding their connections.
            for _ in range(400):
                if await _blocked_readers(admin, database) > 0:
                    break
                await asyncio.sleep(0.025)
            assert await _blocked_readers(admin, database) > 0
            health = await asyncio.wait_for(api.get("/health"), 5)
            assert health.status_code == 200, health.text
            assert health.json()["checks"]["database"]["status"] == "ok", health.text

            # The daemon's own bookkeeping goes through while the API's reads wait.
            job = await asyncio.wait_for(daemon.store.create_job("update"), 5)
            await asyncio.wait_for(daemon.store.finish_job(job, "success", 0, None), 5)

            # Reads past the bound were refused at once, not after a timeout.
            done = [task for task in reads if task.done()]
            assert done, "no read was refused while every slot was taken"
            for task in done:
                response = task.result()
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"].isdigit()
        finally:
            await lock.rollback()
            responses = await asyncio.gather(*reads)
            await locker.close()
            await admin.close()
    served = [r for r in responses if r.status_code == 200]
    assert served, "no read was served once the lock was gone"
    for response in served:
        assert response.json()["count"] == 2_000
    for response in responses:
        if response.status_code != 200:
            assert response.status_code == 503, response.text
            assert "Retry-After" in response.headers
