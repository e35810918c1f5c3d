"""What a cluster looks like from outside: /status `cluster`, the /health `cluster` check, the
loops a member leaves to another (`skipped: held by X`), and `market-data status`. Two daemons
are built (not run) on one PostgreSQL database; the test drives their `cluster_heartbeat`
cycles."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import market_data
from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.errors import MarketDataError
from market_data.models import SeriesKey
from tests.e2e.test_cli_basic import run_cli
from tests.integration.cluster_support import TcpCut

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
TTL = 5  # LEASE_TTL_SECONDS' least
SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD")
SRC = Path(market_data.__file__).resolve().parents[1]  # the code under test, for the CLI


def _daemon(database_url: str, daemon_id: str) -> Daemon:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_symbols=",".join(SYMBOLS),
        bitfinex_timeframes="1m,1h",
        bitfinex_rest_url="http://127.0.0.1:9",
        bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
        daemon_id=daemon_id,
        lease_ttl_seconds=TTL,
    )
    daemon = Daemon(settings)
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    daemon.ws = None  # not running here
    return daemon


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[tuple[Daemon, Daemon]]:
    a, b = _daemon(database_url, "node-a"), _daemon(database_url, "node-b")
    await a.store.upgrade()
    try:
        yield a, b
    finally:
        for d in (a, b):
            await d.close()


async def _settle(daemons: tuple[Daemon, ...], share: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        for d in daemons:
            await d.cluster.cycle()
        if [d.cluster.state.held_channels for d in daemons] == [share] * len(daemons):
            break
        assert time.monotonic() < deadline, [d.cluster.state for d in daemons]
        await asyncio.sleep(0.1)
    for _ in range(2):  # every row's counts taken after the spread settled, and read back
        for d in daemons:
            await d.cluster.cycle()


async def test_status_and_health_show_the_members_and_this_one_s_share(
    pair: tuple[Daemon, Daemon], database_url: str, tmp_path: Path
) -> None:
    a, b = pair
    await _settle((a, b), 3)  # 6 channels (3 pairs x 2 native timeframes) over two
    transport = httpx.ASGITransport(app=create_app(a))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8100") as c:
        body = (await c.get("/status")).json()
        cluster = body["cluster"]
        assert cluster["self"] == "node-a"
        assert [(m["id"], m["channels"], m["alive"]) for m in cluster["members"]] == [
            ("node-a", 3, True),
            ("node-b", 3, True),
        ]
        assert cluster["held_channels"] == cluster["expected_channels"] == 3
        metrics = (await c.get("/metrics")).text
        assert "market_data_cluster_members_alive 2.0" in metrics
        assert "market_data_cluster_channels_held 3.0" in metrics
        assert "market_data_cluster_fenced 0.0" in metrics
        health = (await c.get("/health")).json()
        assert health["checks"]["cluster"] == {
            "status": "ok",
            "detail": "2 live member(s); holds 3 of its 3 channels",
        }

        # One member runs retention for both; the other's cycle says who does.
        await a.loops["cleanup"].run_cycle(asyncio.Event())
        await b.loops["cleanup"].run_cycle(asyncio.Event())
        assert b.loops["cleanup"].status.last_result == "skipped: held by node-a"
        assert a.loops["cleanup"].status.last_result != "skipped: held by node-b"

        env = {"DATABASE_URL": database_url, "PYTHONPATH": str(SRC)}
        listed = await asyncio.to_thread(run_cli, "status", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "node-a" in listed.stdout
        assert "node-b" in listed.stdout
        assert listed.stdout.count("alive") == 2

        # b leaves cleanly: a takes every channel at its next cycles, without waiting a TTL.
        await b.cluster.leave()
        await _settle((a,), 6)
        cluster = (await c.get("/status")).json()["cluster"]
        assert [(m["id"], m["channels"]) for m in cluster["members"]] == [("node-a", 6)]


async def test_the_stream_is_told_its_channels_and_told_to_stop_when_fenced(
    database_url: str,
) -> None:
    announced: list[set[SeriesKey]] = []
    async with TcpCut.to_url(database_url) as cut:
        daemon = _daemon(cut.url, "node-a")
        daemon.cluster.on_channels(announced.append)
        try:
            await daemon.store.upgrade()
            await daemon.cluster.cycle()
            assert announced == [{SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")}]
            await daemon.cluster.cycle()
            assert len(announced) == 1  # told again only when it changes

            cut.cut()  # the database connection is gone: the member fences itself
            cut_at = time.monotonic()
            while announced[-1]:
                with pytest.raises(MarketDataError):
                    await daemon.cluster.cycle()
                assert time.monotonic() - cut_at < TTL + 30
                await asyncio.sleep(0.2)
            assert time.monotonic() - cut_at >= TTL * 0.5
            ok, detail = daemon.cluster_share()
            assert not ok
            assert detail.startswith("fenced")

            cut.restore()
            deadline = time.monotonic() + 30
            while not announced[-1]:
                with contextlib.suppress(MarketDataError):
                    await daemon.cluster.cycle()
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert len(announced[-1]) == 6
        finally:
            await daemon.close()
