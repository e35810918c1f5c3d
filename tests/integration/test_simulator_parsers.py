"""Real recorded payloads and the simulator's answers parse into the same shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_data.errors import ExchangeRequestError, RateLimited
from market_data.exchanges.bitfinex.frames import (
    CandleSnapshot,
    CandleUpdate,
    ConfAck,
    ErrorEvent,
    Heartbeat,
    InfoEvent,
    SubscribedEvent,
    parse_ws_message,
)
from market_data.exchanges.bitfinex.pairs import parse_pair_list
from market_data.exchanges.bitfinex.wire import parse_rest_candles
from market_data.simulator import Simulator
from tests.integration.test_simulator_ws import BUSY, frames_for, open_ws, recv
from tests.plugins.sim import SimulatorFactory

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bitfinex"
NOW_MS = 1_900_000_000_000


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def jsonl(name: str) -> list[Any]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def test_rest_candles_parse_like_the_recorded_ones(simulator: Simulator) -> None:
    real = parse_rest_candles(
        (FIXTURES / "rest_candles_hist_tBTCUSD_1m_limit0_2025-08-10_bbgo.json").read_bytes(),
        "BTCUSD",
        "1m",
        NOW_MS,
    )
    async with httpx.AsyncClient(base_url=simulator.rest_url) as client:
        hist = await client.get("/v2/candles/trade:1m:tBTCUSD/hist")
        last = await client.get("/v2/candles/trade:1m:tBTCUSD/last")
        pairs = await client.get("/v2/conf/pub:list:pair:exchange")
        bad = await client.get("/v2/candles/trade:1m:tBTCUSD/hist?limit=20000")
    now = simulator.market.now_ms()
    ours = parse_rest_candles(hist.content, "BTCUSD", "1m", now)
    assert real.raw_count == ours.raw_count == 120
    assert real.rejected_count == ours.rejected_count == 0
    assert type(real.candles[0]) is type(ours.candles[0])
    assert ours.candles[-1].final
    single = parse_rest_candles(last.content, "BTCUSD", "1m", now)
    assert single.raw_count == 1
    assert single.candles[0].ts == ours.candles[0].ts
    real_pairs = parse_pair_list(
        (FIXTURES / "rest_conf_pub_list_pair_exchange_2021-04-17_cryptofeed.json").read_bytes()
    )
    our_pairs = parse_pair_list(pairs.content)
    assert "AAVE:USD" in real_pairs
    assert "DOGE:USD" in our_pairs
    with pytest.raises(ExchangeRequestError):
        parse_rest_candles(bad.content, "BTCUSD", "1m", now)
    observed = fixture("rest_error_payloads_observed.json")
    ratelimit = next(e for e in observed if e["id"] == "ratelimit_429_2020")
    with pytest.raises(RateLimited):
        parse_rest_candles(json.dumps(ratelimit["body"]), "BTCUSD", "1m", now)


def _recorded_ws_frames() -> list[Any]:
    frames = []
    for name in (
        "ws_candles_docs_example.jsonl",
        "ws_candles_ccxt_pro_comment_examples.jsonl",
        "ws_error_frames_observed.jsonl",
        "ws_session_ticker_trades_book_2025-08-15_bbgo.jsonl",
    ):
        for entry in jsonl(name):
            if isinstance(entry, dict) and "raw" in entry:
                frames.append(entry["raw"])  # an envelope around the exact text frame
            elif isinstance(entry, list) or "dir" not in entry:
                frames.append(json.dumps(entry))  # the bbgo capture: frames as recorded
    return frames


async def test_ws_frames_parse_like_the_recorded_ones(simulator_factory: SimulatorFactory) -> None:
    real_kinds = {type(parse_ws_message(raw)) for raw in _recorded_ws_frames()}
    assert {InfoEvent, SubscribedEvent, CandleSnapshot, CandleUpdate, Heartbeat} <= real_kinds

    sim = await simulator_factory(pairs=(BUSY,), speed=30.0, ws_heartbeat_seconds=0.2)
    raw_frames: list[str] = []
    async with await open_ws(sim) as ws:
        await ws.send(
            json.dumps({"event": "subscribe", "channel": "candles", "key": "trade:1m:tBTCUSD"})
        )
        await ws.send(
            json.dumps({"event": "subscribe", "channel": "candles", "key": "trade:1m:tBTCUSD"})
        )
        raw_frames = [json.dumps(f) for f in await frames_for(ws, 0.6)]
        await ws.send(json.dumps({"event": "conf", "flags": 65536 + 32768}))
        # Data frames already in flight may arrive before the ack: read up to the ack first.
        while not isinstance(parse_ws_message(json.dumps(await recv(ws))), ConfAck):
            pass
        with_flags = json.dumps(await recv(ws))
    ours = [parse_ws_message(raw) for raw in raw_frames]
    kinds = {type(event) for event in ours}
    assert {SubscribedEvent, CandleSnapshot, CandleUpdate, ErrorEvent} <= kinds
    dup = next(e for e in ours if isinstance(e, ErrorEvent))
    assert dup.code == 10301
    assert dup.chan_id is not None
    flagged = parse_ws_message(with_flags)
    assert isinstance(flagged, (CandleUpdate, Heartbeat))
