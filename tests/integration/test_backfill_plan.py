"""The backfill's planning helpers (pure) and its plan against a real store."""

from __future__ import annotations

import pytest

from market_data.config import load_settings
from market_data.models import Candle, SeriesKey
from market_data.ranges import subtract
from market_data.services.backfill import BackfillService, order_series
from market_data.storage.base import Store
from market_data.timeframes import DAY_MS, HOUR_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_subtract() -> None:
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10)], [(3, 5)]) == [(0, 3), (5, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], [(-5, 2), (8, 20)]) == [(2, 8)]
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert subtract([(0, 10)], [(10, 20), (3, 3)]) == [(0, 10)]
    assert subtract([(5, 5)], []) == []


def test_order_series_puts_sources_of_derived_first() -> None:
    natives, derived = order_series(
        [
            SeriesKey("BTCUSD", "1m"),
            SeriesKey("BTCUSD", "4h"),
            SeriesKey("ETHUSD", "1d"),
            SeriesKey("ETHUSD", "8h"),
            SeriesKey("BTCUSD", "1h"),
        ]
    )
    assert natives == [
        SeriesKey("BTCUSD", "1h"),
        SeriesKey("ETHUSD", "1h"),
        SeriesKey("BTCUSD", "1m"),
        SeriesKey("ETHUSD", "1d"),
    ]
    assert derived == [SeriesKey("BTCUSD", "4h"), SeriesKey("ETHUSD", "8h")]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_plan_skips_what_is_stored_and_known_empty(store: Store, database_url: str) -> None:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        retention_days={"1h": 0, "1m": 0, "4h": 0, "1d": 0},
    )
    service = BackfillService(settings, store, None, None)  # type: ignore[arg-type]
    key = SeriesKey("BTCUSD", "1h")
    start, now = T0, T0 + 10 * DAY_MS + 30 * 60_000
    assert await service.plan(key, start, now, now) == [(start, now)]
    # stored: hours 48..99 final, hour 100 still open; known empty: hours 0..10
    rows = [
        Candle("BTCUSD", "1h", T0 + h * HOUR_MS, 1, 1, 1, 1, 1, h < 100) for h in range(48, 101)
    ]
    await store.upsert_candles(rows)
    await store.add_empty_ranges(key, [(T0, T0 + 10 * HOUR_MS)])
    assert await service.plan(key, start, now, now) == [
        (T0 + 10 * HOUR_MS, T0 + 48 * HOUR_MS),  # older history still missing
        (T0 + 100 * HOUR_MS, now),  # from the open candle on
    ]
    # retention horizon: nothing before it is fetched again
    await store.set_retention_horizon(key, T0 + 20 * HOUR_MS)
    assert (await service.plan(key, start, now, now))[0] == (T0 + 20 * HOUR_MS, T0 + 48 * HOUR_MS)
