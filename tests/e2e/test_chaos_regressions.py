"""Regressions found by the chaos run, each reproduced on its own: fast, no chaos marker.

A database outage is made for one database only (connections refused and the open ones
terminated), so the PostgreSQL server and every other test keep running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from market_data.simulator import Simulator
from tests.e2e.daemon_process import DaemonProcess, start_daemon, wait_for
from tests.plugins.db import ADMIN_URL

pytestmark = pytest.mark.postgres

TOKEN = "regress-token-41"


async def _allow_connections(database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await conn.close()


async def _health_code(d: DaemonProcess) -> int:
    return (await d.get("/health")).status_code


async def test_database_outage_during_backfills_does_not_kill_the_daemon(
    simulator_factory: Callable[..., object],
    fresh_database_url: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Found by the chaos run: a PostgreSQL restart while the startup backfill ran killed the
    daemon (exit 1: the backfill's job bookkeeping raised StorageUnavailable out of the task).
    The same held for a backfill or a gap repair asked for over the API."""
    sim: Simulator = await simulator_factory()  # type: ignore[misc]
    sim.set_faults(rest_slow_rate=1.0, rest_slow_seconds=0.4)  # the backfill takes a while
    url = fresh_database_url("postgres")
    database = url.rsplit("/", 1)[1]
    d = await start_daemon(
        tmp_path,
        "outage",
        DATABASE_URL=url,
        BITFINEX_REST_URL=sim.rest_url,
        BITFINEX_WS_URL=sim.ws_url,
        BITFINEX_SYMBOLS="BTCUSD,DOGEUSD,ETHUSD",
        BITFINEX_TIMEFRAMES="1m,1h",
        BACKFILL_DAYS="20",
        RATE_LIMIT_DELAY="0",
        WS_INGESTION_ENABLED="false",
        API_TOKEN=TOKEN,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:

        async def backfill_state() -> str:
            return str((await d.json("/status"))["backfill"]["state"])

        await wait_for(lambda: _is(backfill_state, "running"), 30, "the startup backfill")
        await _allow_connections(database, False)
        await wait_for(lambda: _is(lambda: _health_code(d), 503), 20, "/health to say 503")

        async def backfill_hit_the_outage() -> bool:
            if not d.alive:
                return True
            health = (await d.get("/health")).json()
            return bool(health["checks"]["backfill"]["status"] != "ok")

        await wait_for(backfill_hit_the_outage, 30, "the startup backfill to meet the outage")
        assert d.alive, d.log()[-3000:]
        await _allow_connections(database, True)
        await wait_for(lambda: _is(backfill_state, "done"), 90, "the backfill to finish")

        await _allow_connections(database, False)
        await wait_for(lambda: _is(lambda: _health_code(d), 503), 20, "/health to say 503")
        for path in ("/backfill", "/gaps/repair"):
            response = await d.client.post(path, headers=auth)
            assert response.status_code in (202, 409, 503), (path, response.text)
        # Work asked for while the database is down must not take the daemon with it either.
        await _stays_alive(d, 3.0)
        await _allow_connections(database, True)
        await wait_for(lambda: _is(lambda: _health_code(d), 200), 30, "/health back to 200")
        assert d.alive, d.log()[-3000:]
        code, _ = await d.stop()
        assert code == 0, d.log()[-3000:]
    finally:
        await _allow_connections(database, True)
        await d.kill()
    assert "died" not in d.log(), d.log()[-3000:]


async def _stays_alive(d: DaemonProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert d.alive, d.log()[-3000:]
        await asyncio.sleep(0.1)


async def _is(probe: Callable[[], object], expected: object, negate: bool = False) -> bool:
    value = await probe()  # type: ignore[misc]
    return (value != expected) if negate else (value == expected)
