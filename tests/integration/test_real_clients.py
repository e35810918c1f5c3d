"""Real Bitfinex clients against the simulator: what works against the exchange must work here.

- ccxt (a dev dependency): `load_markets` (one multi-key `/v2/conf` request), `fetch_ohlcv`, and a
  rate-limit storm raising its RateLimitExceeded; ccxt.pro `watch_ohlcv` over the WebSocket.
- bitfinex-api-py, the official client: REST candles, a WebSocket candle subscription, and 20051
  restarts it must ride out (it reconnects and resubscribes on its own). It pins websockets 12,
  which this project cannot share, so it runs in its own virtualenv (made once, kept in pytest's
  cache directory) as a subprocess: tests/integration/bfxapi_session.py.

Every client's URLs point at the simulator; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from market_data.simulator import Simulator
from market_data.simulator.pairs import DEFAULT_PAIRS, PairSpec
from market_data.timeframes import MINUTE_MS, align
from tests.plugins.sim import SimulatorFactory

BFXAPI = "bitfinex-api-py==4.0.0"
SESSION_SCRIPT = Path(__file__).with_name("bfxapi_session.py")
# BTCUSD trades every few seconds, so updates come quickly; the other pairs as by default.
BUSY_BTC = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=120.0)
PAIRS = (BUSY_BTC, *DEFAULT_PAIRS[1:])
HOUR_OF_MINUTES = 60
RESTARTS = 4

pytestmark = pytest.mark.timeout(180)


async def _simulator(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory(pairs=PAIRS)


def _ccxt_urls(sim: Simulator) -> dict[str, Any]:
    ws = {"public": sim.ws_url, "private": sim.ws_url}
    return {"api": {"public": sim.rest_url, "v1": sim.rest_url, "private": sim.rest_url, "ws": ws}}


@contextlib.asynccontextmanager
async def _ccxt(sim: Simulator, kind: Any = ccxt_async) -> AsyncIterator[Any]:
    exchange = kind.bitfinex({"urls": _ccxt_urls(sim), "enableRateLimit": False})
    try:
        yield exchange
    finally:
        await exchange.close()


def _truth_rows(sim: Simulator, symbol: str, start: int, end: int) -> list[list[float]]:
    """Closed candles as ccxt returns them: [ts, open, high, low, close, volume]."""
    return [
        [c.ts, c.open, c.high, c.low, c.close, c.volume]
        for c in sim.market.truth(symbol, "1m", start, end)
    ]


async def test_ccxt_loads_markets_and_fetches_candles(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await _simulator(simulator_factory)
    now = sim.market.now_ms()
    start = align(now, "1m") - HOUR_OF_MINUTES * MINUTE_MS
    async with _ccxt(sim) as exchange, asyncio.timeout(60):
        markets = await exchange.load_markets()
        # The markets come from one /v2/conf request with four keys (it loaded zero before).
        assert set(markets) == {"BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD", "ZRX/USD", "APT/USD"}
        assert markets["DOGE/USD"]["id"] == "tDOGE:USD"
        assert markets["BTC/USD"]["limits"]["amount"]["min"] > 0
        assert sim.stats.rest_requests(endpoint="conf") >= 1
        for symbol, pair in (("BTC/USD", "BTCUSD"), ("DOGE/USD", "DOGEUSD")):
            rows = await exchange.fetch_ohlcv(symbol, "1m", since=start, limit=HOUR_OF_MINUTES)
            expected = _truth_rows(sim, pair, start, align(now, "1m"))
            assert expected, pair
            assert rows[: len(expected)] == expected, symbol

        sim.start_rest_storm(5.0, ban=5.0)
        with pytest.raises(ccxt_async.RateLimitExceeded):
            await exchange.fetch_ohlcv("BTC/USD", "1m", limit=5)


async def test_ccxt_pro_watches_candles(simulator_factory: SimulatorFactory) -> None:
    sim = await _simulator(simulator_factory)
    async with _ccxt(sim, ccxt_pro) as exchange, asyncio.timeout(60):
        first = await exchange.watch_ohlcv("BTC/USD", "1m")
        opening = align(sim.market.now_ms(), "1m")
        closed = [row for row in first if row[0] < opening - MINUTE_MS]
        assert len(closed) >= 100  # the snapshot: 240 rows, newest first on the wire
        assert closed == _truth_rows(sim, "BTCUSD", closed[0][0], closed[-1][0] + MINUTE_MS)
        updates = [await exchange.watch_ohlcv("BTC/USD", "1m") for _ in range(3)]
    for update in updates:
        assert update[-1][0] >= opening - MINUTE_MS  # the candle that is open (or just closed)
        assert update[-1][2] >= update[-1][3]  # high >= low


# -- the official client, in its own virtualenv ---------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def bfxapi_python(request: pytest.FixtureRequest) -> Path:
    """A Python with bitfinex-api-py installed (from the configured package index, once, into
    pytest's cache directory)."""
    name = "bfxapi-" + BFXAPI.split("==")[1]
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        home = cache.mkdir(name)
    else:  # run with -p no:cacheprovider: a fixed place outside the tree, kept between runs
        home = Path(tempfile.gettempdir()) / f"market-data-tests-{os.getuid()}" / name
        home.mkdir(parents=True, exist_ok=True)
    venv = home / "venv"
    python = venv / "bin" / "python"
    ready = home / "ready"
    with (home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers build it once, one at a time
        if not ready.exists():
            try:
                subprocess.run(
                    [sys.executable, "-m", "venv", "--clear", str(venv)],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                subprocess.run(
                    [str(python), "-m", "pip", "install", "-q", BFXAPI],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                reason = f"cannot install {BFXAPI}: {exc} {detail.decode(errors='replace')[-500:]}"
                if _in_ci():
                    pytest.fail(reason)
                pytest.skip(reason)
            ready.write_text(BFXAPI)
    return python


async def _line(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not raw:
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode(errors="replace")
        raise AssertionError(f"the client ended (exit {await proc.wait()}): {err[-3000:]}")
    message: dict[str, Any] = json.loads(raw)
    return message


async def _next_update(proc: asyncio.subprocess.Process) -> list[Any]:
    while True:
        message = await _line(proc)
        if "update" in message:
            update: list[Any] = message["update"]
            return update


async def test_official_client_rest_candles_stream_and_restarts(
    simulator_factory: SimulatorFactory, bfxapi_python: Path
) -> None:
    sim = await _simulator(simulator_factory)
    now = sim.market.now_ms()
    start = align(now, "1m") - HOUR_OF_MINUTES * MINUTE_MS
    proc = await asyncio.create_subprocess_exec(
        str(bfxapi_python),
        str(SESSION_SCRIPT),
        sim.rest_url,
        sim.ws_url,
        str(start),
        str(HOUR_OF_MINUTES),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        rest = (await _line(proc))["rest"]
        # The official client's rows: MTS, OPEN, CLOSE, HIGH, LOW, VOLUME.
        expected = [
            [c.ts, c.open, c.close, c.high, c.low, c.volume]
            for c in sim.market.truth("BTCUSD", "1m", start, align(now, "1m"))
        ]
        assert rest[: len(expected)] == expected

        snapshot = await _line(proc)
        assert snapshot["count"] == sim.config.ws_snapshot_length
        assert snapshot["snapshot"][0] >= align(now, "1m")
        await _next_update(proc)

        # Server restarts (20051): the client reconnects and resubscribes each time. With the
        # socket closed at the instant of the notice it crashed about every other time.
        for _ in range(RESTARTS):
            opened, subscribed = sim.stats.ws_opened, sim.stats.ws_subscriptions
            await sim.restart_connections()
            while not (sim.stats.ws_opened > opened and sim.stats.ws_subscriptions > subscribed):
                await _next_update(proc)  # the old connection's last updates, until it is back
            await _next_update(proc)  # and one over the new connection
            assert proc.returncode is None

        assert proc.stdin is not None
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        while "done" not in await _line(proc):
            pass
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    assert "Traceback" not in (await proc.stderr.read()).decode(errors="replace")
    assert sim.stats.faults_fired["ws_restart"] == RESTARTS
