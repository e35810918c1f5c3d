"""BITFINEX_SOURCE_ADDRESS: REST and WebSocket connections to the exchange leave from the
address given, and the simulator, which counts its limits per client address, gives each
address a budget of its own (how several daemons on one host act as separate machines)."""

from __future__ import annotations

import asyncio
import time

import pytest

from market_data.errors import RateLimited
from market_data.exchanges.base import CandleFrame
from market_data.exchanges.bitfinex import BitfinexRest
from market_data.exchanges.bitfinex.pool import ShardPool
from market_data.exchanges.bitfinex.wire import candle_key
from market_data.exchanges.bitfinex.ws import Subscription, WsOptions
from market_data.models import SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.simulator import Simulator
from tests.plugins.sim import SimulatorFactory

BUDGET = 3  # REST requests per peer address per window


def _rest(sim: Simulator, source: str) -> BitfinexRest:
    # No retries: the first 429 is the answer under test.
    return BitfinexRest(
        sim.rest_url, RateLimiter(0, 0, 0, 0, 0), source_address=source, unavailable_attempts=1
    )


async def test_each_source_address_gets_its_own_rest_budget(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(rest_rate_limit=BUDGET, rest_rate_window=60.0)
    first, second = _rest(sim, "127.0.0.2"), _rest(sim, "127.0.0.3")
    try:
        for _ in range(BUDGET):
            await first.fetch_pairs()
        with pytest.raises(RateLimited):
            await first.fetch_pairs()
        for _ in range(BUDGET):  # the other address is untouched by the first one's use
            await second.fetch_pairs()
        with pytest.raises(RateLimited):
            await second.fetch_pairs()
    finally:
        await first.aclose()
        await second.aclose()
    peers = {record.peer for record in sim.stats.rest_log}
    assert peers == {"127.0.0.2", "127.0.0.3"}


async def test_each_source_address_gets_its_own_websocket_connection_budget(
    simulator_factory: SimulatorFactory,
) -> None:
    # One new connection per address per minute: two pools from one address could not both
    # connect, from two they do.
    sim = await simulator_factory(ws_connection_limit=1, ws_connection_window=60.0)
    ready: dict[str, list[SeriesKey]] = {"127.0.0.2": [], "127.0.0.3": []}

    async def deliver(frame: CandleFrame) -> None:
        pass

    def pool(source: str, symbol: str, pair: str) -> ShardPool:
        options = WsOptions(
            url=sim.ws_url,
            clock_ms=sim.market.now_ms,
            max_per_connection=25,
            heartbeat_timeout=5.0,
            backoff_initial=0.1,
            backoff_max=1.0,
            source_address=source,
        )
        subs = [Subscription(SeriesKey(symbol, "1m"), candle_key(pair, "1m"))]
        return ShardPool(options, subs, deliver, lambda _s, series: ready[source].extend(series))

    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        pool("127.0.0.2", "BTCUSD", "BTCUSD").start(tg, stop)
        pool("127.0.0.3", "ETHUSD", "ETHUSD").start(tg, stop)
        try:
            deadline = time.monotonic() + 30
            while not all(ready.values()):
                assert time.monotonic() < deadline, f"not both subscribed: {ready}"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
    assert sim.stats.ws_refused == 0
    assert ready == {
        "127.0.0.2": [SeriesKey("BTCUSD", "1m")],
        "127.0.0.3": [SeriesKey("ETHUSD", "1m")],
    }
