"""Derived timeframes through the sink and the store: recomputed when a source candle changes."""

from __future__ import annotations

import pytest

from market_data.config import Settings, load_settings
from market_data.models import Candle, SeriesKey
from market_data.services import derived
from market_data.services.sink import CandleSink
from market_data.storage.base import Store
from market_data.timeframes import HOUR_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
H4 = SeriesKey("BTCUSD", "4h")
H1 = SeriesKey("BTCUSD", "1h")


def settings_for(database_url: str) -> Settings:
    return load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_symbols="BTCUSD",
        bitfinex_timeframes="1h,4h,8h",
    )


def hour(i: int, price: float, volume: float = 1.0, *, final: bool = True) -> Candle:
    return Candle(
        "BTCUSD", "1h", T0 + i * HOUR_MS, price, price + 2, price - 1, price + 1, volume, final
    )


async def test_sink_writes_derived_periods_touched(store: Store, database_url: str) -> None:
    sink = CandleSink(store, settings_for(database_url))
    result = await sink.write([hour(i, 100 + i) for i in range(6)], "backfill")
    assert result.written == 6
    four = await store.candles_in_range(H4, T0, T0 + 8 * HOUR_MS)
    assert [(c.ts, c.open, c.close, c.high, c.low, c.volume) for c in four] == [
        (T0, 100, 104, 105, 99, 4),
        (T0 + 4 * HOUR_MS, 104, 106, 107, 103, 2),
    ]
    eight = await store.candles_in_range(SeriesKey("BTCUSD", "8h"), T0, T0 + 8 * HOUR_MS)
    assert [(c.ts, c.volume) for c in eight] == [(T0, 6)]
    assert sink.stats.written_by_source == {"backfill": 6}
    assert sink.stats.derived_written == 3


async def test_changed_source_candle_recomputes_its_period(store: Store, database_url: str) -> None:
    sink = CandleSink(store, settings_for(database_url))
    await sink.write([hour(i, 100) for i in range(8)], "backfill")
    # A late correction of one hour inside the second 4h period: only that period changes.
    await sink.write([Candle("BTCUSD", "1h", T0 + 5 * HOUR_MS, 100, 250, 50, 101, 9)], "ws")
    four = {c.ts: c for c in await store.candles_in_range(H4, T0, T0 + 8 * HOUR_MS)}
    assert (four[T0].high, four[T0].volume) == (102, 4)
    assert (four[T0 + 4 * HOUR_MS].high, four[T0 + 4 * HOUR_MS].low) == (250, 50)
    assert four[T0 + 4 * HOUR_MS].volume == 12
    assert four[T0 + 4 * HOUR_MS].final is True
    assert sink.stats.written_by_source == {"backfill": 8, "ws": 1}


async def test_open_source_candle_keeps_derived_open(store: Store, database_url: str) -> None:
    sink = CandleSink(store, settings_for(database_url))
    await sink.write([hour(0, 100), hour(1, 100, final=False)], "ws")
    [four] = await store.candles_in_range(H4, T0, T0 + 4 * HOUR_MS)
    assert four.final is False
    await sink.write([hour(1, 100), hour(2, 100), hour(3, 100)], "ws")
    [four] = await store.candles_in_range(H4, T0, T0 + 4 * HOUR_MS)
    assert four.final is True
    assert four.volume == 4


async def test_recompute_reads_in_pages_and_removes_nothing(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(derived, "READ_PAGE", 7)  # pages end inside 4h periods
    sink = CandleSink(store, settings_for(database_url))
    await store.upsert_candles([hour(i, 100) for i in range(30)])
    lone = Candle("BTCUSD", "4h", T0 + 400 * HOUR_MS, 1, 1, 1, 1, 1)
    await store.upsert_candles([lone])
    aggregator = sink.derived
    result = await aggregator.recompute(H1, T0, T0 + 500 * HOUR_MS, timeframes=["4h"])
    four = await store.candles_in_range(H4, T0, T0 + 500 * HOUR_MS)
    assert result.written == 8  # 30 hours -> 7 full periods and one of two hours
    assert [c.ts for c in four][:8] == [T0 + i * 4 * HOUR_MS for i in range(8)]
    assert [c.volume for c in four][:8] == [4, 4, 4, 4, 4, 4, 4, 2]
    assert four[-1] == lone  # a derived row without source is not deleted


async def test_rejected_source_rows_do_not_reach_derived(store: Store, database_url: str) -> None:
    sink = CandleSink(store, settings_for(database_url))
    bad = Candle("BTCUSD", "1h", T0 + HOUR_MS, 100, 90, 110, 100, 1)  # high below low
    result = await sink.write([hour(0, 100), bad], "ws")
    assert result.written == 1
    assert len(result.rejected) == 1
    assert sink.stats.rejected_by_source == {"ws": 1}
    [four] = await store.candles_in_range(H4, T0, T0 + 4 * HOUR_MS)
    assert four.volume == 1
