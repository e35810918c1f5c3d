"""The REST update loop: the latest candles of every native series, the open one not final."""

from __future__ import annotations

from market_data.models import SeriesKey
from market_data.services.update import UpdateService
from market_data.simulator import Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, align
from tests.integration.gap_support import candles_requests, make_settings, rig, values


async def test_update_writes_the_latest_candles_and_records_a_job(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols="BTCUSD,ETHUSD",
        bitfinex_timeframes="1h,4h",
        rest_update_enabled=True,
    )
    r = rig(settings, store)
    update = UpdateService(settings, store, r.exchange, r.sink)
    before = candles_requests(simulator)
    written = await update.run_once()
    now = simulator.market.now_ms()
    assert candles_requests(simulator) - before == 2  # one per native series (1h; 4h is derived)

    for symbol in ("BTCUSD", "ETHUSD"):
        series = SeriesKey(symbol, "1h")
        stored = await store.candles_in_range(series, 0, now + HOUR_MS)
        assert len(stored) == 10
        open_period = align(now, "1h")
        closed = [c for c in stored if c.ts < open_period]
        assert all(c.final for c in closed)
        assert values(closed) == values(
            simulator.market.truth(symbol, "1h", closed[0].ts, open_period)
        )
        if stored[-1].ts == open_period:  # a trade happened already in this hour
            assert not stored[-1].final
        assert await store.candles_in_range(SeriesKey(symbol, "4h"), 0, now + HOUR_MS)
    assert written >= 20
    job = (await store.list_jobs(job_type="update", limit=1))[0]
    assert (job.status, job.candles_fetched) == ("success", written)

    # A second run rewrites nothing that has not changed.
    assert await update.run_once() <= 2
    assert update.stats.runs == 2
    assert update.stats.requests == 4
    await r.close()


async def test_an_unlisted_symbol_is_skipped_and_the_rest_updated(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator.rest_url, bitfinex_symbols="NOPEUSD,BTCUSD")
    r = rig(settings, store)
    update = UpdateService(settings, store, r.exchange, r.sink)
    assert await update.run_once() >= 9
    assert await store.series_stats()
    assert not await store.candles_in_range(
        SeriesKey("NOPEUSD", "1h"), 0, simulator.market.now_ms()
    )
    job = (await store.list_jobs(job_type="update", limit=1))[0]
    assert job.status == "success"
    await r.close()
