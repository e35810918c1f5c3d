"""The batch check (services/range_check.py) against the simulator and a real store.

One REST page checks a whole range of a series: differences are rewritten through the sink,
stored candles the exchange lacks are counted and left alone, and what the page did not prove
(refused rows, a truncated page) is reported as unproven rather than taken as verified.
"""

from __future__ import annotations

from dataclasses import replace

from market_data.config import Settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle, SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.services.range_check import RangeChecker
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, MINUTE_MS, align
from tests.plugins.sim import SimulatorFactory

KEY = SeriesKey("BTCUSD", "1m")
SOURCE = "test_check"


def _settings(sim: Simulator, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        bitfinex_symbols=["BTCUSD"],
        bitfinex_timeframes=["1m"],
        bitfinex_rest_url=sim.rest_url,
        bitfinex_ws_url=sim.ws_url,
        rate_limit_delay=0,
    )


def _hist_requests(sim: Simulator) -> int:
    return sim.stats.rest_requests("candles_hist")


async def _stored(store: SqlStore, start: int, end: int) -> dict[int, Candle]:
    return {c.ts: c for c in await store.candles_in_range(KEY, start, end + 1, limit=20_000)}


async def test_one_page_corrects_every_difference_in_the_range(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    # Some minutes without trades, so a stored candle can stand where the exchange has none.
    sparse = PairSpec("BTCUSD", 60_000.0, trade_probability=0.7, trades_per_minute=10.0)
    sim = await simulator_factory(pairs=(sparse,))
    now = sim.market.now_ms()
    start = align(now - 2 * DAY_MS, "1m")
    end = start + 119 * MINUTE_MS
    truth = sim.market.truth("BTCUSD", "1m", start, end + MINUTE_MS)
    assert 60 < len(truth) < 120
    quiet = next(ts for ts in range(start, end, MINUTE_MS) if ts not in {t.ts for t in truth})
    changed, open_, missing = truth[5], truth[10], truth[20]
    stored = [c for c in truth if c is not missing]
    stored = [
        replace(c, close=c.close + 1.0)
        if c is changed
        else replace(c, final=False)
        if c is open_
        else c
        for c in stored
    ]
    stored.append(replace(truth[0], ts=quiet))  # the exchange has no candle there
    settings = _settings(sim, database_url)
    sink = CandleSink(store, settings)
    await sink.write(stored, "ws")
    async with BitfinexRest(sim.rest_url, RateLimiter.from_settings(settings)) as rest:
        checker = RangeChecker(store, BitfinexExchange(rest, sim.ws_url), sink, source=SOURCE)
        before = _hist_requests(sim)
        result = await checker.check(KEY, "BTCUSD", start, end, closed_before_ms=now)
        assert _hist_requests(sim) == before + 1  # one request for the whole range
    assert result.compared == len(truth)
    assert result.corrected == 3
    assert result.extra == 1
    assert result.unproven is None
    assert sink.stats.written_by_source[SOURCE] == 3
    rows = await _stored(store, start, end)
    for candle in truth:
        assert rows[candle.ts].final, candle.ts
        assert rows[candle.ts].same_values(candle), candle.ts
    assert quiet in rows  # counted, not deleted: that is the gap machinery's decision


async def test_refused_rows_prove_nothing_for_their_periods(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    busy = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=10.0)
    sim = await simulator_factory(pairs=(busy,))
    now = sim.market.now_ms()
    start = align(now - DAY_MS, "1m")
    end = start + 29 * MINUTE_MS
    truth = sim.market.truth("BTCUSD", "1m", start, end + MINUTE_MS)
    wrong = replace(truth[12], high=truth[12].high + 5.0)
    settings = _settings(sim, database_url)
    sink = CandleSink(store, settings)
    await sink.write([wrong if c.ts == wrong.ts else c for c in truth], "ws")
    sim.faults.update(rest_corrupt_rate=1.0)  # every row of the answer is broken
    async with BitfinexRest(sim.rest_url, RateLimiter.from_settings(settings)) as rest:
        checker = RangeChecker(store, BitfinexExchange(rest, sim.ws_url), sink, source=SOURCE)
        result = await checker.check(KEY, "BTCUSD", start, end, closed_before_ms=now)
        assert result.corrected == 0
        assert result.unproven is not None
        assert result.unproven[0] <= wrong.ts <= result.unproven[1]
        assert sink.stats.rejected_by_source[SOURCE] == len(truth)  # quarantined, counted
        assert not (await _stored(store, wrong.ts, wrong.ts))[wrong.ts].same_values(truth[12])
        # Asked again once the exchange answers cleanly: now it is proven and corrected.
        sim.faults.update(rest_corrupt_rate=0.0)
        again = await checker.check(KEY, "BTCUSD", *result.unproven, closed_before_ms=now)
    assert again.unproven is None
    assert again.corrected == 1
    assert (await _stored(store, wrong.ts, wrong.ts))[wrong.ts].same_values(truth[12])


async def test_a_full_page_proves_only_its_newest_ten_thousand_candles(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    busy = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=10.0)
    sim = await simulator_factory(pairs=(busy,))
    now = sim.market.now_ms()
    start = align(now - 10 * DAY_MS, "1m")
    end = start + 10_049 * MINUTE_MS  # 10,050 candles: one more page than a request holds
    truth = sim.market.truth("BTCUSD", "1m", start, end + MINUTE_MS)
    assert len(truth) == 10_050
    oldest = replace(truth[0], volume=truth[0].volume + 1.0)
    newest = replace(truth[-1], volume=truth[-1].volume + 1.0)
    settings = _settings(sim, database_url)
    sink = CandleSink(store, settings)
    await sink.write([oldest, *truth[1:-1], newest], "ws")
    async with BitfinexRest(sim.rest_url, RateLimiter.from_settings(settings)) as rest:
        checker = RangeChecker(store, BitfinexExchange(rest, sim.ws_url), sink, source=SOURCE)
        result = await checker.check(KEY, "BTCUSD", start, end, closed_before_ms=now)
    assert result.compared == 10_000
    assert result.corrected == 1  # the newest; the oldest was not on the page
    assert result.unproven == (start, truth[50].ts - 1)
    assert result.extra == 0
    rows = await _stored(store, start, end)
    assert rows[newest.ts].same_values(truth[-1])
    assert not rows[oldest.ts].same_values(truth[0])


async def test_a_confirming_check_records_the_no_trade_periods_its_page_proves(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    thin = PairSpec("BTCUSD", 60_000.0, trade_probability=0.2, trades_per_minute=3.0)
    sim = await simulator_factory(pairs=(thin,))
    now = align(sim.market.now_ms(), "1m")
    start = now - 60 * MINUTE_MS
    end = now - MINUTE_MS  # the newest ended minute: never proven empty by a page
    traded = {c.ts for c in sim.market.truth("BTCUSD", "1m", start, now)}
    quiet = set(range(start, now, MINUTE_MS)) - traded
    settings = _settings(sim, database_url)
    sink = CandleSink(store, settings)
    async with BitfinexRest(sim.rest_url, RateLimiter.from_settings(settings)) as rest:
        exchange = BitfinexExchange(rest, sim.ws_url)
        checker = RangeChecker(store, exchange, sink, source=SOURCE, record_empty=True)
        # A page with refused rows proves nothing: no empty range, everything unconfirmed.
        sim.faults.update(rest_corrupt_rate=1.0)
        broken = await checker.check(KEY, "BTCUSD", start, end, closed_before_ms=now)
        assert await store.empty_ranges(KEY, start, now) == []
        assert broken.empty_periods == 0
        assert broken.unconfirmed == (start, end)
        sim.faults.update(rest_corrupt_rate=0.0)
        result = await checker.check(KEY, "BTCUSD", start, end, closed_before_ms=now)
    recorded = {
        ts for a, b in await store.empty_ranges(KEY, start, now) for ts in range(a, b, MINUTE_MS)
    }
    assert recorded == quiet - {end}  # the candles it did not write are the no-trade minutes
    assert result.empty_periods == len(recorded) > 20
    # What stays to confirm: the newest ended minute, only when it had no trade.
    assert result.unconfirmed == ((end, end) if end in quiet else None)
    assert set((await _stored(store, start, end)).keys()) == traded  # written, source SOURCE
