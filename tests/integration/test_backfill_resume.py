"""Backfill stopped and resumed, and under the rate limiter: nothing lost, nothing fetched twice."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

import pytest

from market_data.config import Settings
from market_data.models import Candle, SeriesKey
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.storage.base import Store, UpsertResult
from market_data.timeframes import DAY_MS, align
from tests.integration.test_backfill import (
    assert_matches_truth,
    backfill_service,
    hist_requests,
    make_settings,
)
from tests.plugins.sim import SimulatorFactory

BTC = SeriesKey("BTCUSD", "1m")
ETH = SeriesKey("ETHUSD", "1m")


class HookSink(CandleSink):
    """Calls `hook()` once `pages` pages have been written."""

    def __init__(
        self, store: Store, settings: Settings, pages: int, hook: Callable[[], None]
    ) -> None:
        super().__init__(store, settings)
        self.pages, self.hook, self.seen = pages, hook, 0

    async def write(
        self, candles: Sequence[Candle], source: str, *, derive: bool = True
    ) -> UpsertResult:
        result = await super().write(candles, source, derive=derive)
        self.seen += 1
        if self.seen == self.pages:
            self.hook()
        return result


async def pages_missing(store: Store, sim: Simulator, key: SeriesKey, now: int) -> int:
    """Pages a walk needs to fetch what is missing: below the first stored candle (walked newest
    first, so what is stored is contiguous up to the present) and the open tail."""
    first = await store.first_candle(key)
    start = align(now - 25 * DAY_MS, "1m")
    below = len(sim.market.truth(key.symbol, key.timeframe, start, first.ts if first else now))
    return math.ceil(below / 10_000) + 1


async def test_stopped_backfill_resumes_with_only_the_missing_pages(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    # 25 days of 1m in three stages: a page per series for the last day, one for the week, then
    # three (two for ETHUSD) for the deep rest, each page written in slices of 5,000 rows. Stop
    # while BTCUSD's first deep page is written (its seventh write).
    settings = make_settings(database_url, simulator, "BTCUSD,ETHUSD", "1m", backfill_days=25)
    stop = asyncio.Event()
    sink = HookSink(store, settings, 7, stop.set)
    async with backfill_service(settings, store, sink) as service:
        first = await service.run(stop=stop)
        assert service.progress[BTC].state == "cancelled"
        assert service.progress[ETH].state == "cancelled"
        assert service.plan_state.stage == "deep"
        assert [s.requests_done for s in service.plan_state.stages] == [2, 2, 1]
    assert first.cancelled
    assert first.requests == 5
    jobs = await store.list_jobs(job_type="backfill")
    assert [(j.symbol, j.status) for j in reversed(jobs)] == [
        ("BTCUSD", "success"),
        ("ETHUSD", "success"),
        ("BTCUSD", "success"),
        ("ETHUSD", "success"),
        ("BTCUSD", "cancelled"),
    ]
    assert jobs[0].candles_fetched == 10_000

    now = simulator.market.now_ms()
    expected = await pages_missing(store, simulator, BTC, now) + await pages_missing(
        store, simulator, ETH, now
    )
    before = hist_requests(simulator)
    async with backfill_service(settings, store) as service:
        second = await service.run()
    assert second.ok
    used = hist_requests(simulator) - before
    assert expected <= used <= expected + 2  # at most one extra request per series
    assert used == second.requests
    for key in (BTC, ETH):
        await assert_matches_truth(store, simulator, key, align(now - 25 * DAY_MS, "1m"), now)
    jobs = await store.list_jobs(job_type="backfill")
    assert len(jobs) == 9
    assert all(j.status == "success" for j in jobs[:4])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_429_storm_slows_the_backfill_and_loses_nothing(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "BTCUSD,DOGEUSD", "1m", backfill_days=12)
    storm = 1.0
    started: list[float] = []

    def start_storm() -> None:  # after the first page: the walk is under way
        started.append(time.monotonic())
        simulator.start_rest_storm(storm, ban=0.3)

    sink = HookSink(store, settings, 1, start_storm)
    now = simulator.market.now_ms()  # before the run: what was closed then must be final
    async with backfill_service(settings, store, sink) as service:
        report = await service.run()
        waits = sum(p.rate_limit_waits for p in service.progress.values())
        limited = service._exchange.limiter.stats.rate_limited
    elapsed = time.monotonic() - started[0]
    assert report.ok
    assert limited >= 1
    assert waits == limited
    assert elapsed >= storm * 0.9  # nothing got through while the storm lasted
    refused = sum(
        n
        for (endpoint, outcome), n in simulator.stats.rest_counts.items()
        if endpoint == "candles_hist" and outcome != "ok"
    )
    assert refused >= 1
    for key in (BTC, SeriesKey("DOGEUSD", "1m")):
        await assert_matches_truth(store, simulator, key, align(now - 12 * DAY_MS, "1m"), now)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_limiter_spacing_and_penalty_are_honoured(
    store: Store, database_url: str, simulator_factory: SimulatorFactory
) -> None:
    # The exchange allows 5 requests per 0.5 s (then a 0.3 s ban); we pace at one per 0.05 s,
    # which is faster, so the exchange's 429 and our penalty box both come into play.
    sim = await simulator_factory(rest_rate_limit=5, rest_rate_window=0.5, rest_ban_seconds=0.3)
    # 24 small series: one quick request each (two days fit a page: not staged), so the pacing,
    # not the work, sets the rate.
    settings = make_settings(
        database_url,
        sim,
        "BTCUSD,ETHUSD,SOLUSD,DOGEUSD",
        "5m,15m,30m,1h,3h,6h",
        backfill_days=2,
        rate_limit_delay=0.05,
    )
    # Compared up to the start: a candle still open when fetched is rightly stored open, even
    # if its period ends while the backfill runs.
    started = sim.market.now_ms()
    async with backfill_service(settings, store) as service:
        report = await service.run()
    assert report.ok
    log = [r for r in sim.stats.rest_log if r.endpoint == "candles_hist"]
    assert report.requests == sum(1 for r in log if r.outcome == "ok")
    assert report.requests == 24
    times = [r.at for r in log]
    # spacing: never more than one request per 0.05 s (a little slack for answer jitter)
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 0.25) <= 6
    # penalty: after a 429, nothing for the minimum backoff (0.2 s) except one in flight
    refused = [r.at for r in log if r.outcome != "ok"]
    assert refused
    for t in refused:
        assert sum(1 for u in times if t < u < t + 0.18) <= 1
    await assert_matches_truth(
        store, sim, SeriesKey("SOLUSD", "5m"), align(started - 2 * DAY_MS, "5m"), started
    )
