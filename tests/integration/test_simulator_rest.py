"""The simulator's REST side over real sockets, checked against bitfinex-api.md §1."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from market_data.simulator import Simulator
from market_data.simulator.pairs import DEFAULT_PAIRS, PairSpec
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align
from tests.plugins.sim import SimulatorFactory

HIST = "/v2/candles/trade:1m:tBTCUSD/hist"


async def get(sim: Simulator, path: str, **params: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as client:
        return await client.get(path, params=params)


async def test_default_is_120_newest_first(simulator: Simulator) -> None:
    for params in ({}, {"limit": 0}, {"sort": 0, "limit": 0, "start": 0, "end": 0}, {"sort": -1}):
        resp = await get(simulator, HIST, **params)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        rows = resp.json()
        assert len(rows) == 120
        stamps = [r[0] for r in rows]
        assert stamps == sorted(stamps, reverse=True)
        assert stamps[0] >= align(simulator.market.now_ms(), "1m") - 10 * MINUTE_MS


async def test_rows_are_the_truth_in_wire_order(simulator: Simulator) -> None:
    now = simulator.market.now_ms()
    start, end = now - 3 * HOUR_MS, align(now, "1m") - MINUTE_MS
    resp = await get(simulator, HIST, sort=1, start=start, end=end, limit=10000)
    truth = simulator.market.truth("BTCUSD", "1m", start, end + 1)
    assert [[c.ts, c.open, c.close, c.high, c.low, c.volume] for c in truth] == resp.json()


async def test_sort_1_without_start_gives_oldest_history(simulator: Simulator) -> None:
    rows = (await get(simulator, HIST, sort=1, limit=5)).json()
    listing = simulator.market.listing_ms("BTCUSD")
    assert len(rows) == 5
    assert listing <= rows[0][0] < listing + HOUR_MS
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


async def test_start_alone_with_default_sort_gives_newest(simulator: Simulator) -> None:
    start = simulator.market.listing_ms("BTCUSD") + DAY_MS
    newest = (await get(simulator, HIST, limit=3)).json()
    rows = (await get(simulator, HIST, start=start, limit=3)).json()
    assert rows[0][0] == newest[0][0]
    assert rows[0][0] > start + 300 * DAY_MS


async def test_start_and_end_are_inclusive(simulator: Simulator) -> None:
    now = simulator.market.now_ms()
    truth = simulator.market.truth("BTCUSD", "1m", now - 2 * HOUR_MS, now - HOUR_MS)
    first, last = truth[3].ts, truth[-3].ts
    up = (await get(simulator, HIST, sort=1, start=first, end=last, limit=10000)).json()
    down = (await get(simulator, HIST, sort=-1, start=first, end=last, limit=10000)).json()
    assert up[0][0] == first
    assert up[-1][0] == last
    assert down == list(reversed(up))
    limited = (await get(simulator, HIST, start=first, end=last, limit=2)).json()
    assert [r[0] for r in limited] == [down[0][0], down[1][0]]
    assert (await get(simulator, HIST, start=last, end=first)).json() == []


async def test_limit_bounds(simulator: Simulator) -> None:
    assert len((await get(simulator, HIST, limit=10000)).json()) == 10000
    for bad in (10001, -1):
        resp = await get(simulator, HIST, limit=bad)
        assert resp.status_code == 500
        assert resp.json() == ["error", 10020, "limit: invalid"]
    resp = await get(simulator, HIST, start="yesterday")
    assert resp.status_code == 500
    assert resp.json()[:2] == ["error", 10020]


@pytest.mark.parametrize("tf", ["4h", "2h", "8h", "1d", "1w", "7D", "3H"])
async def test_timeframes_bitfinex_does_not_serve_are_refused(
    simulator: Simulator, tf: str
) -> None:
    resp = await get(simulator, f"/v2/candles/trade:{tf}:tBTCUSD/hist")
    assert resp.status_code == 500
    assert resp.json() == ["error", 10020, "time_frame: invalid"]


@pytest.mark.parametrize(
    "tf", ["5m", "15m", "30m", "1h", "3h", "6h", "12h", "1D", "1W", "14D", "1M"]
)
async def test_native_timeframes_are_served_aligned(simulator: Simulator, tf: str) -> None:
    rows = (await get(simulator, f"/v2/candles/trade:{tf}:tETHUSD/hist", limit=3)).json()
    assert len(rows) == 3
    canonical = {"1D": "1d", "1W": "1w", "14D": "14d"}.get(tf, tf)
    assert all(align(r[0], canonical) == r[0] for r in rows)


async def test_unknown_pair_and_colon_pair(simulator: Simulator) -> None:
    for key in ("trade:1m:tNOPEUSD", "trade:1m:tDOGEUSD", "trade:1m:BTCUSD", "trade::1m::tBTCUSD"):
        resp = await get(simulator, f"/v2/candles/{key}/hist")
        assert resp.status_code == 200
        assert resp.json() == []
    rows = (await get(simulator, "/v2/candles/trade:1m:tDOGE:USD/hist", limit=5)).json()
    assert len(rows) == 5
    assert rows[0][1] < 10  # a DOGE price, not a BTC one


async def test_last_returns_one_bare_candle(simulator: Simulator) -> None:
    hist = (await get(simulator, HIST, limit=1)).json()
    last = (await get(simulator, "/v2/candles/trade:1m:tBTCUSD/last")).json()
    assert isinstance(last[0], int)
    assert last[0] == hist[0][0]
    assert (await get(simulator, "/v2/candles/trade:1m:tNOPEUSD/last")).json() == []


async def test_open_candle_is_newest_row(simulator_factory: SimulatorFactory) -> None:
    busy = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=300.0)
    minute = align(int(time.time() * 1000), "1m") + 30 * 60_000
    sim = await simulator_factory(pairs=(busy,), clock=lambda: (minute + 30_000) / 1000)
    rows = (await get(sim, HIST, limit=2)).json()
    assert rows[0][0] == minute
    final = sim.market.candle_at("BTCUSD", "1m", minute, now_ms=minute + 60_000)
    assert final is not None
    assert 0 < rows[0][5] < final.volume
    assert rows[1][0] == minute - MINUTE_MS


async def test_pair_list_and_platform_status(simulator: Simulator) -> None:
    pairs = (await get(simulator, "/v2/conf/pub:list:pair:exchange")).json()
    assert pairs == [[p.pair for p in DEFAULT_PAIRS]]
    assert {"BTCUSD", "ETHUSD", "SOLUSD", "DOGE:USD"} <= set(pairs[0])
    assert (await get(simulator, "/v2/platform/status")).json() == [1]
    assert (await get(simulator, "/v2/nothing")).status_code == 404


async def test_conf_answers_one_array_per_key_in_order(simulator: Simulator) -> None:
    # What ccxt's load_markets asks for, in one request (it was answered `[[]]`).
    keys = "pub:info:pair,pub:info:pair:futures,pub:list:pair:securities,pub:list:pair:margin"
    answer = (await get(simulator, f"/v2/conf/{keys}")).json()
    assert len(answer) == 4
    info, futures, securities, margin = answer
    assert [entry[0] for entry in info] == [p.pair for p in DEFAULT_PAIRS]
    for _, fields in info:  # [PAIR, [null, null, null, MIN_ORDER, MAX_ORDER, null...]]
        assert len(fields) == 12
        assert 0 < float(fields[3]) < float(fields[4])
        assert "e" not in fields[3] + fields[4]
    assert futures == securities == margin == []
    both = (await get(simulator, "/v2/conf/pub:list:currency,pub:list:pair:exchange")).json()
    assert both[1] == [p.pair for p in DEFAULT_PAIRS]
    assert {"BTC", "USD", "DOGE", "ZRX"} <= set(both[0])
    assert (await get(simulator, "/v2/conf/pub:list:pair:exchange")).json() == [both[1]]
    assert (await get(simulator, "/v2/conf/pub:map:currency:sym")).json() == [[]]
    too_many = await get(simulator, "/v2/conf/" + ",".join(["pub:list:currency"] * 33))
    assert too_many.status_code == 500
    assert too_many.json()[:2] == ["error", 10020]
    assert (await get(simulator, "/v2/conf/pub:list:currency,,x")).status_code == 500


async def test_rate_limit_then_ban(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(rest_rate_limit=5, rest_rate_window=3.0, rest_ban_seconds=1.5)
    statuses = [(await get(sim, "/v2/platform/status")).status_code for _ in range(5)]
    assert statuses == [200] * 5
    over = await get(sim, "/v2/platform/status")
    assert over.status_code == 429
    assert over.json() == ["error", 11010, "ratelimit: error"]
    banned_at = time.monotonic()
    during = await get(sim, HIST)
    assert during.status_code == 429
    assert sim.stats.rest_requests(outcome="rate_limited") == 1
    assert sim.stats.rest_requests(outcome="banned") == 1
    assert sim.stats.rest_requests(endpoint="platform_status", outcome="ok") == 5
    deadline = banned_at + 8
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        resp = await get(sim, "/v2/platform/status")
        if resp.status_code == 200:
            break
    assert resp.status_code == 200
    assert time.monotonic() - banned_at >= 1.4


async def test_requests_per_window_are_countable(simulator: Simulator) -> None:
    since = time.time()
    for _ in range(3):
        await get(simulator, HIST, limit=1)
    assert simulator.stats.rest_requests(endpoint="candles_hist", since=since) == 3
    assert simulator.stats.rest_requests(endpoint="candles_hist", since=time.time() + 1) == 0
