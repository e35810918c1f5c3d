"""Backfill against the simulator over real sockets, on SQLite and PostgreSQL: the database ends up
equal to the simulator's truth for every closed candle, with the fewest requests."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from market_data.config import Settings, load_settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.services.backfill import BackfillService
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.simulator.pairs import PairSpec, pairs_by_name
from market_data.storage.base import Store
from market_data.timeframes import DAY_MS, align, next_open
from tests.plugins.sim import SimulatorFactory

NO_RETENTION = {"1m": 0, "1h": 0, "4h": 0, "1d": 0}


def make_settings(
    database_url: str, sim: Simulator, symbols: str, timeframes: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "bitfinex_rest_url": sim.rest_url,
        "bitfinex_symbols": symbols,
        "bitfinex_timeframes": timeframes,
        "backfill_days": 3,
        "retention_days": NO_RETENTION,
        "rate_limit_delay": 0,
        "rate_limit_initial_backoff": 0.1,
        "rate_limit_min_backoff_seconds": 0.2,
        "rate_limit_max_backoff": 0.8,
        "rate_limit_max_retries": 30,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@asynccontextmanager
async def backfill_service(
    settings: Settings, store: Store, sink: CandleSink | None = None
) -> AsyncIterator[BackfillService]:
    limiter = RateLimiter.from_settings(settings)
    async with BitfinexRest(settings.bitfinex_rest_url, limiter, retry_backoff=0.05) as rest:
        exchange = BitfinexExchange(rest, settings.bitfinex_ws_url)
        yield BackfillService(settings, store, exchange, sink or CandleSink(store, settings))


def hist_requests(sim: Simulator) -> int:
    return sim.stats.rest_requests("candles_hist", "ok")


async def assert_matches_truth(
    store: Store, sim: Simulator, key: SeriesKey, start_ms: int, closed_before_ms: int
) -> int:
    """Stored == truth for every candle that had closed before `closed_before_ms`; returns the
    number compared."""
    end = align(closed_before_ms, key.timeframe)
    truth = sim.market.truth(key.symbol, key.timeframe, start_ms, end)
    stored = await store.candles_in_range(key, start_ms, end, limit=1_000_000)
    stored_ts = [c.ts for c in stored]
    assert len(stored_ts) == len(set(stored_ts)), f"{key}: duplicates"
    by_ts = {c.ts: c for c in stored}
    missing = [c.ts for c in truth if c.ts not in by_ts]
    extra = sorted(set(by_ts) - {c.ts for c in truth})
    different = [
        c.ts
        for c in truth
        if c.ts in by_ts and not _same(by_ts[c.ts], c, exact=key.timeframe != "4h")
    ]
    assert (missing, extra, different) == ([], [], []), f"{key}: differs from the truth"
    assert all(c.final for c in stored), f"{key}: a closed candle is stored as open"
    return len(truth)


def _same(a: Any, b: Any, *, exact: bool) -> bool:
    if exact:
        return bool(a.same_values(b))
    return (a.open, a.high, a.low, a.close) == (b.open, b.high, b.low, b.close) and math.isclose(
        a.volume, b.volume, rel_tol=1e-9
    )


async def min_requests(store: Store, keys: Sequence[SeriesKey]) -> int:
    """The fewest requests that could have fetched what is stored: ceil(candles / 10,000)."""
    counts = {(s.symbol, s.timeframe): s.candle_count for s in await store.series_stats()}
    return sum(max(1, math.ceil(counts.get((k.symbol, k.timeframe), 0) / 10_000)) for k in keys)


def pairs(*names: str, listed_days_ago: float = 5.0) -> tuple[PairSpec, ...]:
    """The default pairs by name; APTUSD listed `listed_days_ago` days before the start."""
    chosen = pairs_by_name(list(names))
    return tuple(
        replace(p, listed_days_ago=listed_days_ago) if p.symbol == "APTUSD" else p for p in chosen
    )


async def test_backfill_equals_truth(
    store: Store, database_url: str, simulator_factory: SimulatorFactory
) -> None:
    # 1m is bounded by its 9-day retention (two pages for BTCUSD); 1h (and 4h from it) go back
    # the full 40 days (within the simulator's 4096-hour cache, so checking costs little).
    # APTUSD was listed 5 days ago: its walk must stop at its first candle.
    sim = await simulator_factory(pairs=pairs("BTCUSD", "DOGE:USD", "ZRXUSD", "APTUSD"))
    settings = make_settings(
        database_url,
        sim,
        "BTCUSD,DOGE:USD,ZRXUSD,APTUSD",
        "1m,4h",
        backfill_days=40,
        retention_days={**NO_RETENTION, "1m": 9},
    )
    before = sim.market.now_ms()
    async with backfill_service(settings, store) as service:
        report = await service.run()
    assert report.ok, report
    assert not report.cancelled
    compared = 0
    for symbol in ("BTCUSD", "DOGEUSD", "ZRXUSD", "APTUSD"):
        start_1m = before - 9 * DAY_MS
        start_1h = align(before - 40 * DAY_MS, "1h")
        compared += await assert_matches_truth(
            store, sim, SeriesKey(symbol, "1m"), start_1m, before
        )
        compared += await assert_matches_truth(
            store, sim, SeriesKey(symbol, "1h"), start_1h, before
        )
        compared += await assert_matches_truth(
            store, sim, SeriesKey(symbol, "4h"), align(start_1h, "4h"), before
        )
        # retention: nothing older than 9 days of 1m was fetched
        first_1m = await store.first_candle(SeriesKey(symbol, "1m"))
        assert first_1m is not None
        assert first_1m.ts >= align(before - 9 * DAY_MS, "1m")
    assert compared > 20_000
    # the recently listed pair starts at its listing, and the empty range before it is known
    listing = sim.market.listing_ms("APTUSD")
    first = await store.first_candle(SeriesKey("APTUSD", "1m"))
    assert first is not None
    assert first.ts >= listing
    assert await store.empty_ranges(SeriesKey("APTUSD", "1m"), 0, first.ts)
    # the fewest requests: one per 10,000 candles, plus at most one per series and stage
    natives = [
        SeriesKey(s, tf) for s in ("BTCUSD", "DOGEUSD", "ZRXUSD", "APTUSD") for tf in ("1m", "1h")
    ]
    assert report.requests == hist_requests(sim)
    assert report.requests <= await min_requests(store, natives) + 3 * len(natives)
    # one job per series and stage: 1m's 9 days of retention (12,960 candles, more than a page)
    # in three stages; 1h's 40 days fit one page, so 1h and the 4h built from it in one stage
    jobs = await store.list_jobs(limit=100, job_type="backfill")
    assert len(jobs) == 4 * 3 + 4 + 4
    assert {j.status for j in jobs} == {"success"}
    by_series: dict[tuple[str, str], int] = {}
    for j in jobs:
        by_series[(j.symbol, j.timeframe)] = by_series.get((j.symbol, j.timeframe), 0) + (
            j.candles_fetched
        )
    assert by_series[("BTCUSD", "1m")] > 10_000
    assert 240 <= by_series[("BTCUSD", "4h")] <= 241


async def test_open_candle_is_stored_open_and_rerun_fetches_only_the_tail(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "BTCUSD,APTUSD", "1h", backfill_days=30)
    async with backfill_service(settings, store) as service:
        assert (await service.run()).ok
    fetched_at = simulator.market.now_ms()
    stored = await store.candles_in_range(
        SeriesKey("BTCUSD", "1h"), align(fetched_at, "1h") - DAY_MS, fetched_at + DAY_MS
    )
    open_ones = [c for c in stored if next_open(c.ts, "1h") > fetched_at - 5_000]
    assert open_ones, "the still-open hour was fetched"
    assert all(not c.final for c in open_ones)
    # a rerun resumes from the last final candle: one request per series, APTUSD's pre-listing
    # range is not walked again
    before = hist_requests(simulator)
    async with backfill_service(settings, store) as service:
        report = await service.run()
    assert report.ok
    assert hist_requests(simulator) - before == 2
    assert report.requests == 2


async def test_unknown_symbol_is_skipped_and_others_run(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "NOPEUSD,BTCUSD", "1h")
    before = simulator.market.now_ms()
    async with backfill_service(settings, store) as service:
        report = await service.run()
        assert service.progress[SeriesKey("NOPEUSD", "1h")].state == "skipped"
    assert report.unknown_symbols == ["NOPEUSD"]
    assert not report.ok
    assert await assert_matches_truth(
        store, simulator, SeriesKey("BTCUSD", "1h"), align(before - 3 * DAY_MS, "1h"), before
    )
    jobs = {(j.symbol, j.status) for j in await store.list_jobs(job_type="backfill")}
    assert jobs == {("NOPEUSD", "failed"), ("BTCUSD", "success")}


async def test_explicit_range_and_retention_horizon(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "ETHUSD", "1h")
    now = simulator.market.now_ms()
    key = SeriesKey("ETHUSD", "1h")
    horizon = align(now - 10 * DAY_MS, "1h")
    await store.set_retention_horizon(key, horizon)
    start, end = align(now - 20 * DAY_MS, "1h"), align(now - 5 * DAY_MS, "1h")
    async with backfill_service(settings, store) as service:
        report = await service.run([key], start_ms=start, end_ms=end)
    assert report.ok
    first, last = await store.first_candle(key), await store.last_candle(key)
    assert first is not None
    assert last is not None
    assert first.ts >= horizon
    assert last.ts < end
    await assert_matches_truth(store, simulator, key, horizon, end)
