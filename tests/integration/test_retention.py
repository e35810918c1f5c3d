"""Retention: exactly the candles older than the cut-off go (derived ones too, in small batches),
their gap rows with them, and neither the backfill nor the detector goes back for them."""

from __future__ import annotations

import logging

import pytest

from market_data.models import SeriesKey
from market_data.services.backfill import BackfillService
from market_data.services.retention import RetentionService, cutoff_ms
from market_data.simulator import Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, HOUR_MS, align
from tests.integration.gap_support import (
    NO_RETENTION,
    fill,
    make_settings,
    messages,
    punch,
    rig,
    rows_before,
    values,
)
from tests.plugins.db import record_gaps

BTC1H, BTC4H = SeriesKey("BTCUSD", "1h"), SeriesKey("BTCUSD", "4h")


async def test_retention_deletes_exactly_the_old_candles_and_nobody_refetches_them(
    store: SqlStore, database_url: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="market_data.services")
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_timeframes="1h,4h",
        backfill_days=5,
        retention_days={**NO_RETENTION, "1h": 2, "4h": 3.5},
    )
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 5 * DAY_MS, "1d"), align(now, "1h")
    truth = await fill(r.sink, simulator, "BTCUSD", "1h", start, end)
    four = await store.candles_in_range(BTC4H, start, end)
    cut_1h, cut_4h = cutoff_ms(now, 2 * DAY_MS, "1h"), cutoff_ms(now, round(3.5 * DAY_MS), "4h")
    assert start < cut_4h < cut_1h
    await record_gaps(
        store,
        BTC1H,
        [(start + HOUR_MS, start + 2 * HOUR_MS), (cut_1h + HOUR_MS, cut_1h + 2 * HOUR_MS)],
    )

    retention = RetentionService(settings, store, clock=lambda: now, batch_size=7)
    deleted = await retention.run_once()
    expected = rows_before(truth, cut_1h) + rows_before(four, cut_4h)
    assert deleted == expected > 0
    assert values(await store.candles_in_range(BTC1H, 0, end)) == values(
        [c for c in truth if c.ts >= cut_1h]
    )
    assert [c.ts for c in await store.candles_in_range(BTC4H, 0, end)] == [
        c.ts for c in four if c.ts >= cut_4h
    ]
    assert [g.gap_start for g in await store.list_gaps()] == [cut_1h + HOUR_MS]
    assert await store.get_retention_horizon(BTC1H) == cut_1h
    assert f"Deleted {deleted} old candles" in messages(caplog.records)[-1]
    job = (await store.list_jobs(job_type="cleanup", limit=1))[0]
    assert (job.status, job.candles_fetched) == ("success", deleted)
    assert await retention.run_once() == 0  # nothing left to do

    # BACKFILL_DAYS (5) reaches further back than retention (2): the purged range stays purged.
    backfill = BackfillService(settings, store, r.exchange, r.sink, clock=lambda: now)
    await backfill.run([BTC1H])
    assert r.rest.calls, "the backfill asked for the recent candles"
    assert all(call.start_ms >= cut_1h for call in r.rest.calls)
    assert (await store.first_candle(BTC1H)).ts == cut_1h  # type: ignore[union-attr]

    # The detector neither reports nor fetches anything before the cut-off.
    await punch(store, BTC1H, cut_1h + 5 * HOUR_MS, cut_1h + 6 * HOUR_MS)
    gaps = (await r.gaps.detect(full=True)).new_gaps
    hole = (cut_1h + 5 * HOUR_MS, cut_1h + 6 * HOUR_MS)
    assert [(g.gap_start, g.gap_end) for g in gaps] == [hole]
    await r.close()


async def test_timeframes_without_retention_are_kept(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator.rest_url)  # no RETENTION_* at all
    r = rig(settings, store)
    now = simulator.market.now_ms()
    truth = await fill(r.sink, simulator, "BTCUSD", "1h", now - 3 * DAY_MS, now)
    assert await RetentionService(settings, store).run_once() == 0
    assert len(await store.candles_in_range(BTC1H, 0, now)) == len(truth)
    assert await store.get_retention_horizon(BTC1H) is None
    await r.close()
