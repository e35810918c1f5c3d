"""The exchange-shaped market: a whole pair list with its long tail, listings and delistings.

Over the simulator's real sockets where the wire matters (pair list, REST candles, WebSocket
subscribe answers); the market's truth where the statistics are measured.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from market_data.exchanges.bitfinex.pairs import parse_pair_list
from market_data.models import canonical_symbol, exchange_pair_map
from market_data.simulator import Market, Simulator, exchange_pairs
from market_data.simulator.exchange import MAJOR_PAIRS, is_test_pair
from market_data.simulator.pairs import PairSpec
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align
from tests.plugins.sim import SimulatorFactory

PAIR_LIST = "/v2/conf/pub:list:pair:exchange"
REAL_PAIRS_2025 = (
    Path(__file__).parent.parent
    / "fixtures"
    / "bitfinex"
    / "rest_conf_pub_info_pair_2025-08-10_bbgo.json"
)
NOW_S = 1_780_000_000.0  # a fixed market time: 2026-05-28 20:26:40 UTC
NOW_MS = int(NOW_S * 1000)


class ManualClock:
    """Market time a test moves by hand."""

    def __init__(self, start_s: float = NOW_S) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, minutes: float) -> None:
        self.now_s += minutes * 60.0


async def get_json(sim: Simulator, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as client:
        response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def pair_list(sim: Simulator) -> list[str]:
    body = await get_json(sim, PAIR_LIST)
    assert len(body) == 1
    return list(body[0])


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def open_ws(sim: Simulator) -> ClientConnection:
    ws = await connect(sim.ws_url)
    assert (await recv(ws))["event"] == "info"
    return ws


async def subscribe(ws: ClientConnection, key: str) -> dict[str, Any]:
    """The answer to a candle subscription: the ack (its snapshot read) or the error event."""
    await ws.send(json.dumps({"event": "subscribe", "channel": "candles", "key": key}))
    while True:
        frame = await recv(ws)
        if isinstance(frame, dict):
            break
    if frame["event"] == "subscribed":
        while not (isinstance(snapshot := await recv(ws), list) and snapshot[0] == frame["chanId"]):
            pass
        frame["snapshot"] = snapshot[1]
    return frame


def minutes_share(market: Market, symbol: str, start_ms: int, end_ms: int) -> float:
    """Share of the window's minutes that have a 1m candle in the truth."""
    return len(market.truth(symbol, "1m", start_ms, end_ms)) / ((end_ms - start_ms) // MINUTE_MS)


def test_exchange_pairs_look_like_bitfinex_list() -> None:
    specs = exchange_pairs(7, 300)
    pairs = [spec.pair for spec in specs]
    assert len(pairs) == 300
    assert pairs == sorted(pairs)
    assert len({canonical_symbol(p) for p in pairs}) == 300
    # The 2025 list: 127 of 294 pairs with a colon, 16 test pairs.
    colon = [p for p in pairs if ":" in p]
    assert 0.3 < len(colon) / len(pairs) < 0.55
    for pair in pairs:
        base, _, quote = pair.partition(":") if ":" in pair else (pair[:3], "", pair[3:])
        assert re.fullmatch(r"[A-Z]{3,}", base), pair
        assert re.fullmatch(r"[A-Z]{3,}", quote), pair
        assert (":" in pair) == (len(base) > 3 or len(quote) > 3), pair
    tests = [p for p in pairs if is_test_pair(p)]
    assert "TESTBTC:TESTUSD" in tests
    assert 10 <= len(tests) <= 20
    assert {"BTCUSD", "ETHUSD", "SOLUSD", "DOGE:USD"} <= set(pairs)


def test_same_seed_same_exchange_other_seed_differs() -> None:
    assert exchange_pairs(7, 300) == exchange_pairs(7, 300)
    other = {spec.pair for spec in exchange_pairs(8, 300)}
    assert len({spec.pair for spec in exchange_pairs(7, 300)} - other) > 200

    def run(seed: int) -> tuple[list[str], list[float]]:
        clock = ManualClock()
        market = Market(seed, exchange_pairs(seed, 60), clock=clock, churn_minutes=10)
        clock.advance(35)
        tail = next(s.pair for s in market.pairs if 0.05 < s.trade_probability < 0.3)
        closes = [c.close for c in market.truth(tail, "1h", NOW_MS - 5 * DAY_MS, NOW_MS)]
        return market.exchange_pairs(), closes

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


def test_activity_share_falls_with_rank_and_the_truth_agrees() -> None:
    market = Market(3, exchange_pairs(3, 300), clock=lambda: NOW_S)
    end = align(NOW_MS, "1h")
    start = end - DAY_MS
    traded = [
        spec
        for spec in market.pairs
        if not is_test_pair(spec.pair) and market.listing_ms(spec.symbol) <= start
    ]
    assert len(traded) > 200
    measured = {spec.symbol: minutes_share(market, spec.symbol, start, end) for spec in traded}
    for spec in traded:
        stated = market.activity_share(spec.symbol)
        assert measured[spec.symbol] == pytest.approx(stated, abs=0.06), spec.pair
    shares = sorted(measured.values(), reverse=True)
    assert sum(share < 0.10 for share in shares) > 0.6 * len(shares)
    assert 3 <= sum(share > 0.90 for share in shares) <= 10
    # Activity falls with rank: the most active by spec are the most active measured.
    by_stated = sorted(traded, key=lambda spec: -spec.trade_probability)
    assert all(measured[spec.symbol] > 0.9 for spec in by_stated[:3])
    assert all(measured[spec.symbol] < 0.05 for spec in by_stated[-50:])


async def test_pair_list_over_http_is_shaped_like_the_real_one(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(pairs=exchange_pairs(11, 300))
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as client:
        body = (await client.get(PAIR_LIST)).content
    ours = parse_pair_list(body)  # the daemon's own parser
    real = parse_pair_list(REAL_PAIRS_2025.read_bytes())
    assert ours == [spec.pair for spec in exchange_pairs(11, 300)]
    assert abs(len(ours) - len(real)) < 20

    def colon_share(pairs: list[str]) -> float:
        return sum(":" in p for p in pairs) / len(pairs)

    def test_pairs(pairs: list[str]) -> set[str]:
        return {p for p in pairs if is_test_pair(p)}

    assert colon_share(ours) == pytest.approx(colon_share(real), abs=0.08)
    assert test_pairs(ours) == test_pairs(real)
    assert len(exchange_pair_map(ours)) == len(ours)
    async with await open_ws(sim) as ws:
        test_pair = await subscribe(ws, "trade:1m:tTESTBTC:TESTUSD")
        colon_pair = await subscribe(ws, "trade:1m:tDOGE:USD")
    assert test_pair["event"] == "subscribed"
    assert colon_pair["event"] == "subscribed"
    assert colon_pair["snapshot"]


async def test_listing_dates_are_respected_by_rest_and_truth(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(pairs=exchange_pairs(5, 300))
    market = sim.market
    now = market.now_ms()
    listed_midway = [
        spec
        for spec in market.pairs
        if market.history_start_ms + 30 * DAY_MS < market.listing_ms(spec.symbol) < now - 5 * DAY_MS
        and spec.trade_probability > 0.02
    ]
    assert len(listed_midway) > 10
    spread = sorted(market.listing_ms(spec.symbol) for spec in market.pairs)
    assert spread[-1] - spread[0] > 200 * DAY_MS  # listings spread over the history
    for spec in listed_midway[:3]:
        listing = market.listing_ms(spec.symbol)
        key = f"trade:1m:t{spec.pair}"
        before = await get_json(sim, f"/v2/candles/{key}/hist", end=listing - 1, limit=10000)
        assert before == []
        assert market.truth(spec.symbol, "1m", listing - 30 * DAY_MS, listing) == []
        rows = await get_json(
            sim,
            f"/v2/candles/{key}/hist",
            sort=1,
            limit=10000,
            start=listing - 30 * DAY_MS,
            end=listing + 2 * DAY_MS,
        )
        assert rows, spec.pair
        assert rows[0][0] >= listing
        truth = market.truth(spec.symbol, "1m", listing - 30 * DAY_MS, listing + 2 * DAY_MS + 1)
        assert [[c.ts, c.open, c.close, c.high, c.low, c.volume] for c in truth] == rows
        days = await get_json(sim, f"/v2/candles/trade:1D:t{spec.pair}/hist", sort=1, limit=5)
        assert days[0][0] == align(listing, "1d")


async def test_delisting_while_running(simulator_factory: SimulatorFactory) -> None:
    # ETHUST trades in almost every minute; at 10x its channel updates several times a second.
    sim = await simulator_factory(
        pairs=exchange_pairs(5, 300), speed=10.0, ws_resend_probability=0.0
    )
    market = sim.market
    assert "ETHUST" in await pair_list(sim)
    async with await open_ws(sim) as ws:
        ack = await subscribe(ws, "trade:1m:tETHUST")
        chan_id = ack["chanId"]
        while (await recv(ws))[1] == "hb":  # an update shows the channel is live
            pass
        market.delist_pair("ETHUST")
        delisted = market.delisting_ms("ETHUST")
        assert delisted is not None
        assert not market.is_listed("ETHUST")
        assert "ETHUST" not in await pair_list(sim)
        # The open channel stays, with heartbeats and no more candles: nothing trades.
        frames = [await recv(ws) for _ in range(4)]
        while frames[0][1] != "hb":  # an update already on its way when the delisting came
            frames.pop(0)
        assert frames
        assert all(f == [chan_id, "hb"] for f in frames), frames
        refused = await subscribe(ws, "trade:5m:tETHUST")
        assert refused == {
            "event": "error",
            "msg": "symbol: invalid",
            "code": 10300,
            "channel": "candles",
            "key": "trade:5m:tETHUST",
        }
    # REST keeps the history, which stops at the delisting; the truth agrees.
    rows = await get_json(sim, "/v2/candles/trade:1m:tETHUST/hist", limit=5)
    assert rows
    assert delisted - 5 * MINUTE_MS < rows[0][0] <= delisted
    assert await get_json(sim, "/v2/candles/trade:1m:tETHUST/hist", start=delisted + 1) == []
    truth = market.truth("ETHUST", "1m", delisted - HOUR_MS, delisted + HOUR_MS)
    assert truth
    assert truth[-1].ts < delisted
    with pytest.raises(ValueError, match="relist"):
        market.list_pair("ETHUST")


async def test_listing_while_running(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(pairs=exchange_pairs(5, 60), speed=60.0)
    market = sim.market
    busy = PairSpec("NEWCOIN:USD", 2.5, trade_probability=1.0, trades_per_minute=5.0)
    async with await open_ws(sim) as ws:
        refused = await subscribe(ws, "trade:1m:tNEWCOIN:USD")
        assert refused["code"] == 10300
        listed = market.list_pair(busy)
        listing = market.listing_ms(listed.symbol)
        assert "NEWCOIN:USD" in await pair_list(sim)
        ack = await subscribe(ws, "trade:1m:tNEWCOIN:USD")
        assert ack["event"] == "subscribed"
        assert all(row[0] >= listing for row in ack["snapshot"])
        # Its first trade: the first update on the channel, in the first whole minute.
        while (frame := await recv(ws, 10.0))[1] == "hb":
            pass
        assert frame[0] == ack["chanId"]
        assert frame[1][0] == align(listing + MINUTE_MS - 1, "1m")
    first_minute = frame[1][0]
    deadline = time.monotonic() + 10.0
    while market.now_ms() < first_minute + 3 * MINUTE_MS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # market time at 60x: three minutes take three seconds
    truth = market.truth("NEWCOIN:USD", "1m", listing - DAY_MS, first_minute + 3 * MINUTE_MS)
    assert [c.ts for c in truth] == [first_minute + i * MINUTE_MS for i in range(3)]
    rows = await get_json(
        sim, "/v2/candles/trade:1m:tNEWCOIN:USD/hist", sort=1, end=first_minute + 3 * MINUTE_MS - 1
    )
    assert rows == [[c.ts, c.open, c.close, c.high, c.low, c.volume] for c in truth]
    with pytest.raises(ValueError, match="already listed"):
        market.list_pair("NEWCOIN:USD")


async def test_schedule_lists_and_delists_every_k_minutes(
    simulator_factory: SimulatorFactory,
) -> None:
    clock = ManualClock(align(NOW_MS, "1m") / 1000)  # events then fall on whole minutes
    sim = await simulator_factory(pairs=exchange_pairs(9, 120), clock=clock, churn_minutes=30)
    market = sim.market
    seen = [set(await pair_list(sim))]
    for event in range(1, 4):
        clock.advance(29)
        assert set(await pair_list(sim)) == seen[-1]  # nothing before the event is due
        clock.advance(1)
        now = set(await pair_list(sim))
        (added,) = now - seen[-1]
        (removed,) = seen[-1] - now
        at = market.book.churn_event_ms(event)
        assert at == market.now_ms()
        assert market.listing_ms(added) == at
        assert market.delisting_ms(removed) == at
        assert not is_test_pair(removed)
        assert removed not in {pair for pair, _ in MAJOR_PAIRS}
        assert all(c.ts < at for c in market.truth(removed, "1m", at - DAY_MS, at + HOUR_MS))
        assert market.truth(added, "1m", at - DAY_MS, at + HOUR_MS) == []
        seen.append(now)
    assert len(seen[-1]) == 120


async def test_scheduled_delisting_stops_websocket_updates(
    simulator_factory: SimulatorFactory,
) -> None:
    # BUSYUSD is the only pair the schedule may delist, so the first event delists it.
    busy = PairSpec("BUSYUSD", 1.0, trade_probability=0.49, trades_per_minute=40.0)
    pairs = (PairSpec("BTCUSD", 60_000.0), busy)
    clock = ManualClock(align(NOW_MS, "1m") / 1000)
    sim = await simulator_factory(pairs=pairs, clock=clock, churn_minutes=30)
    event_ms = sim.market.book.churn_event_ms(1)
    # A minute in which BUSYUSD would have traded had it stayed listed.
    unlisted = Market(sim.config.seed, pairs, clock=lambda: (event_ms + DAY_MS) / 1000)
    after = unlisted.truth("BUSYUSD", "1m", event_ms + MINUTE_MS, event_ms + DAY_MS)[0]
    async with await open_ws(sim) as ws:
        ack = await subscribe(ws, "trade:1m:tBUSYUSD")
        assert ack["event"] == "subscribed"
        # Jump to the end of that minute: its trades are done, its candle is still open.
        clock.now_s = (after.ts + 59_500) / 1000
        frames = [await recv(ws) for _ in range(5)]  # 2.5 s of heartbeats at 0.5 s
    assert frames == [[ack["chanId"], "hb"]] * 5
    assert sim.market.delisting_ms("BUSYUSD") == event_ms
    assert "BUSYUSD" not in await pair_list(sim)


async def test_list_and_delist_at_a_chosen_moment(simulator_factory: SimulatorFactory) -> None:
    clock = ManualClock()
    sim = await simulator_factory(pairs=exchange_pairs(9, 40), clock=clock)
    market = sim.market
    now = market.now_ms()
    market.list_pair("LATER:USD", at_ms=now + 10 * MINUTE_MS)
    market.delist_pair("BTCUST", at_ms=now + 10 * MINUTE_MS)
    with pytest.raises(ValueError, match="past"):
        market.delist_pair("ETHUSD", at_ms=now - 1)
    before = await pair_list(sim)
    assert "LATER:USD" not in before
    assert "BTCUST" in before
    clock.advance(10)
    after = await pair_list(sim)
    assert set(after) == set(before) - {"BTCUST"} | {"LATER:USD"}
    assert market.delisting_ms("BTCUST") == now + 10 * MINUTE_MS
    clock.advance(60)
    truth = market.truth("LATER:USD", "1m", now, market.now_ms())
    assert truth
    assert truth[0].ts >= now + 10 * MINUTE_MS
    assert market.truth("BTCUST", "1m", now + 10 * MINUTE_MS, market.now_ms()) == []
