"""The simulator's WebSocket side over real sockets, checked against bitfinex-api.md §4."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from market_data.simulator import Simulator
from market_data.simulator.pairs import PairSpec
from tests.plugins.sim import SimulatorFactory

BUSY = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=120.0)
QUIET = PairSpec("ZRXUSD", 0.4, trade_probability=0.0)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def open_ws(sim: Simulator) -> ClientConnection:
    ws = await connect(sim.ws_url)
    info = await recv(ws)
    assert info["event"] == "info"
    assert info["version"] == 2
    return ws


async def subscribe(ws: ClientConnection, key: str) -> tuple[int, list[Any]]:
    await ws.send(json.dumps({"event": "subscribe", "channel": "candles", "key": key}))
    ack = await recv(ws)
    assert ack["event"] == "subscribed", ack
    snapshot = await recv(ws)
    assert snapshot[0] == ack["chanId"]
    return ack["chanId"], snapshot[1]


async def frames_for(ws: ClientConnection, seconds: float) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await recv(ws, left))
        except TimeoutError:
            break
    return out


async def test_info_conf_subscribe_snapshot(simulator: Simulator) -> None:
    async with await open_ws(simulator) as ws:
        await ws.send(json.dumps({"event": "conf", "flags": 65536}))
        assert await recv(ws) == {"event": "conf", "status": "OK", "flags": 65536}
        await ws.send(
            json.dumps(
                {
                    "event": "subscribe",
                    "channel": "candles",
                    "key": "trade:1m:tBTCUSD",
                    "subId": "s1",
                }
            )
        )
        ack = await recv(ws)
        assert ack == {
            "event": "subscribed",
            "channel": "candles",
            "chanId": ack["chanId"],
            "key": "trade:1m:tBTCUSD",
            "subId": "s1",
        }
        snapshot = await recv(ws)
        assert snapshot[0] == ack["chanId"]
        rows = snapshot[1]
        assert len(rows) == 240
        assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
        assert snapshot[2] == 1  # SEQ_ALL appends the socket's sequence number
        # Every row but the newest has a newer candle after it, so it is closed. (The newest
        # may close while this test runs: it is left out rather than raced.)
        truth = simulator.market.truth("BTCUSD", "1m", rows[-1][0], rows[1][0] + 1)
        closed = rows[1:]
        assert [[c.ts, c.open, c.close, c.high, c.low, c.volume] for c in truth] == closed[::-1]


async def test_updates_only_when_candle_changes(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(
        pairs=(BUSY,), speed=20.0, ws_resend_probability=0.0, ws_snapshot_length=10
    )
    async with await open_ws(sim) as ws:
        chan, snapshot = await subscribe(ws, "trade:1m:tBTCUSD")
        assert len(snapshot) == 10
        updates = [f[1] for f in await frames_for(ws, 1.5) if f[0] == chan and f[1] != "hb"]
    assert len(updates) >= 10
    for before, after in itertools.pairwise(updates):
        assert after != before
        assert after[0] >= before[0]
        if after[0] == before[0]:
            assert after[1] == before[1]  # same candle: open stays, volume grows
            assert after[5] > before[5]


async def test_previous_candle_is_resent_after_rollover(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(
        pairs=(BUSY,), speed=60.0, ws_resend_probability=1.0, ws_snapshot_length=1
    )
    async with await open_ws(sim) as ws:
        chan, _ = await subscribe(ws, "trade:1m:tBTCUSD")
        updates = [f[1] for f in await frames_for(ws, 2.5) if f[0] == chan and f[1] != "hb"]
    resent = [(prev, row) for prev, row in itertools.pairwise(updates) if row[0] < prev[0]]
    assert resent
    _, old = resent[0]
    truth = sim.market.candle_at("BTCUSD", "1m", old[0])
    assert truth is not None
    assert truth.final
    assert old == [truth.ts, truth.open, truth.close, truth.high, truth.low, truth.volume]


async def test_heartbeats_on_a_silent_channel(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(pairs=(QUIET,), ws_heartbeat_seconds=0.2)
    async with await open_ws(sim) as ws:
        chan, snapshot = await subscribe(ws, "trade:1m:tZRXUSD")
        assert snapshot == []
        start = time.monotonic()
        frames = await frames_for(ws, 1.1)
    assert all(f == [chan, "hb"] for f in frames)
    assert 3 <= len(frames) <= 6  # one every 0.2 s of silence (fewer on a loaded machine)
    assert time.monotonic() - start >= 1.0


async def test_unsubscribe_and_ping(simulator: Simulator) -> None:
    async with await open_ws(simulator) as ws:
        chan, _ = await subscribe(ws, "trade:1h:tETHUSD")
        await ws.send(json.dumps({"event": "ping", "cid": 42}))
        await ws.send(json.dumps({"event": "unsubscribe", "chanId": chan}))
        seen = await frames_for(ws, 1.0)
        events = [f for f in seen if isinstance(f, dict)]
        pong = next(f for f in events if f["event"] == "pong")
        assert pong["cid"] == 42
        assert isinstance(pong["ts"], int)
        assert {"event": "unsubscribed", "status": "OK", "chanId": chan} in events
        after = seen[seen.index({"event": "unsubscribed", "status": "OK", "chanId": chan}) + 1 :]
        assert after == []  # no more heartbeats on that channel
        await ws.send(json.dumps({"event": "unsubscribe", "chanId": chan}))
        error = await recv(ws)
        assert error["event"] == "error"
        assert error["code"] == 10400


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"channel": "candles", "key": "trade:4h:tBTCUSD"}, "time_frame: invalid"),
        ({"channel": "candles", "key": "trade:1d:tBTCUSD"}, "time_frame: invalid"),
        ({"channel": "candles", "key": "trade:1m:tNOPEUSD"}, "symbol: invalid"),
        ({"channel": "candles", "key": "trade:1m:tDOGEUSD"}, "symbol: invalid"),
        ({"channel": "candles", "key": "nonsense"}, "key: invalid"),
        ({"channel": "ticker", "symbol": "tBTCUSD"}, "channel: unknown"),
    ],
)
async def test_subscribe_errors_10300(
    simulator: Simulator, request_: dict[str, str], message: str
) -> None:
    async with await open_ws(simulator) as ws:
        await ws.send(json.dumps({"event": "subscribe", **request_}))
        error = await recv(ws)
    assert error == {"event": "error", "msg": message, "code": 10300, **request_}


async def test_duplicate_and_channel_limit(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(ws_channel_limit=2)
    async with await open_ws(sim) as ws:
        chan, _ = await subscribe(ws, "trade:1m:tBTCUSD")
        await ws.send(
            json.dumps({"event": "subscribe", "channel": "candles", "key": "trade:1m:tBTCUSD"})
        )
        dup = await recv(ws)
        assert dup["code"] == 10301
        assert dup["msg"] == "subscribe: dup"
        assert dup["chanId"] == chan
        assert dup["key"] == "trade:1m:tBTCUSD"
        await subscribe(ws, "trade:5m:tBTCUSD")
        await ws.send(
            json.dumps({"event": "subscribe", "channel": "candles", "key": "trade:15m:tBTCUSD"})
        )
        limit = await recv(ws)
        assert limit["code"] == 10305
        assert limit["msg"] == "subscribe: limit"
        await ws.send(json.dumps({"event": "nope"}))
        unknown = await recv(ws)
        assert unknown["code"] == 10000
        assert unknown["event"] == "error"
    assert sim.stats.ws_errors_sent == {10301: 1, 10305: 1, 10000: 1}


async def test_connection_limit_refuses_handshake(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(ws_connection_limit=3)
    for _ in range(3):
        ws = await open_ws(sim)
        await ws.close()
    with pytest.raises(InvalidStatus) as refused:
        await connect(sim.ws_url)
    assert refused.value.response.status_code == 429
    assert sim.stats.ws_refused == 1
    assert sim.stats.ws_opened == 3
