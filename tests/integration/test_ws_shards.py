"""The WebSocket shards over real sockets against the simulator: refused channels, the channel
limit, and the connection pacer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from market_data.exchanges.base import CandleFrame
from market_data.exchanges.bitfinex.pacing import ConnectionPacer
from market_data.exchanges.bitfinex.pool import ShardPool
from market_data.exchanges.bitfinex.wire import candle_key
from market_data.exchanges.bitfinex.ws import Subscription, WsOptions
from market_data.lifecycle import VirtualClock
from market_data.models import SeriesKey
from market_data.simulator import Simulator
from tests.plugins.sim import SimulatorFactory


async def wait_until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def sub(symbol: str, pair: str, tf: str = "1m") -> Subscription:
    return Subscription(SeriesKey(symbol, tf), candle_key(pair, tf))


@asynccontextmanager
async def running_pool(
    sim: Simulator, subs: list[Subscription], max_per_connection: int
) -> AsyncIterator[tuple[ShardPool, dict[SeriesKey, list[CandleFrame]], list[SeriesKey]]]:
    frames: dict[SeriesKey, list[CandleFrame]] = {}
    ready: list[SeriesKey] = []

    async def deliver(frame: CandleFrame) -> None:
        frames.setdefault(frame.series, []).append(frame)

    options = WsOptions(
        url=sim.ws_url,
        clock_ms=sim.market.now_ms,
        max_per_connection=max_per_connection,
        heartbeat_timeout=2.0,
        backoff_initial=0.1,
        backoff_max=1.0,
    )
    pool = ShardPool(options, subs, deliver, lambda _shard, series: ready.extend(series))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        pool.start(tg, stop)
        try:
            yield pool, frames, ready
        finally:
            stop.set()
    assert all(c.state == "closed" for c in pool.connections)


async def test_refused_series_is_reported_and_the_others_continue(simulator: Simulator) -> None:
    good = [sub("BTCUSD", "BTCUSD"), sub("ETHUSD", "ETHUSD")]
    bad = sub("NOPEUSD", "NOPE:USD")
    async with running_pool(simulator, [good[0], bad, good[1]], 25) as (pool, frames, ready):
        await wait_until(
            lambda: bad.series in pool.failed and all(s.series in frames for s in good),
            "the bad series refused and the good ones streaming",
        )
        assert "10300" in pool.failed[bad.series]
        assert bad.series not in frames
        assert set(ready) == {s.series for s in good}
        (conn,) = pool.connections
        assert conn.subscriptions == sorted(str(s.series) for s in good)
        await wait_until(lambda: conn.state == "subscribed", "the connection to settle")
        # Snapshots came first, in time order once parsed (the exchange sends newest first).
        snapshot = frames[good[0].series][0]
        assert snapshot.snapshot
        assert [c.ts for c in snapshot.candles] == sorted(c.ts for c in snapshot.candles)
        assert len(snapshot.candles) > 1


async def test_channel_limit_moves_channels_to_other_connections(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(ws_channel_limit=2)
    pairs = ["BTCUSD", "ETHUSD", "SOLUSD", "DOGE:USD", "ZRXUSD"]
    subs = [sub(p.replace(":", ""), p) for p in pairs]
    # We believe 4 fit on a connection; the server takes 2 and answers 10305 for the rest.
    async with running_pool(sim, subs, 4) as (pool, frames, ready):
        await wait_until(
            lambda: all(s.series in frames for s in subs), "every series to stream", 20
        )
        await wait_until(
            lambda: all(c.state in ("subscribed", "closed") for c in pool.connections),
            "connections to settle",
        )
        live = [c for c in pool.connections if c.subscriptions]
        assert len(live) == 3
        assert all(len(c.subscriptions) <= 2 for c in live)
        assigned = sorted(s for c in live for s in c.subscriptions)
        assert assigned == sorted(str(s.series) for s in subs)
        assert sorted(map(str, ready)) == sorted(str(s.series) for s in subs)
        assert not pool.failed
        assert sim.stats.ws_errors_sent[10305] >= 2


async def test_pacer_spaces_connections_over_the_window() -> None:
    clock = VirtualClock()
    pacer = ConnectionPacer(per_minute=3, penalty=0.0, clock=clock)  # the real 61 s window
    started = clock.monotonic()
    for _ in range(3):
        await pacer.acquire()  # under the limit: no wait at all
    assert clock.monotonic() == started
    times: list[float] = []

    async def connect() -> None:
        await pacer.acquire()
        times.append(clock.monotonic() - started)

    waiting = [asyncio.create_task(connect()) for _ in range(2)]
    await wait_until(lambda: clock.sleepers > 0, "the fourth connection to wait")
    await clock.advance(60.9)
    assert times == []
    await clock.advance(0.1)  # the first connections leave the window
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert times == [pytest.approx(61.0), pytest.approx(61.0)]

    # A refused handshake: nobody connects during the penalty.
    penalised = ConnectionPacer(per_minute=10, penalty=60.0, clock=clock)
    penalised.penalize()
    blocked = asyncio.create_task(penalised.acquire())
    await wait_until(lambda: clock.sleepers > 0, "the connection to wait out the penalty")
    await clock.advance(59.9)
    assert not blocked.done()
    await clock.advance(0.1)
    await asyncio.wait_for(blocked, 5)
