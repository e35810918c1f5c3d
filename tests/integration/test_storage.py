"""The store's candle paths, the same tests on SQLite and PostgreSQL (see tests/plugins/db.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from market_data.models import Candle, SeriesKey
from market_data.storage.sql import SqlStore, open_store
from market_data.storage.tables import rejected_candles
from tests.plugins.db import count_rows, counted_stats, reported_stats

M = 60_000
H = 3_600_000
T0 = 1_699_999_200_000  # aligned to the hour
BTC = SeriesKey("BTCUSD", "1m")
ETH = SeriesKey("ETHUSD", "1h")


def candle(
    i: int, series: SeriesKey = BTC, price: float = 100.0, final: bool = True, step: int = M
) -> Candle:
    return Candle(
        series.symbol,
        series.timeframe,
        T0 + i * step,
        open=price,
        high=price + 2,
        low=price - 2,
        close=price + 1,
        volume=1.5,
        final=final,
    )


@pytest.fixture(params=["small", "bulk"])
async def writer(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[SqlStore]:
    """A store forced onto one write path; the bulk one in tiny chunks, to cross boundaries."""
    threshold = 10**9 if request.param == "small" else 0
    opened = open_store(database_url, bulk_threshold=threshold)
    await opened.upgrade()
    if request.param == "bulk":
        opened.dialect.bulk_chunk_rows = 7  # type: ignore[misc]
    try:
        yield opened
    finally:
        await opened.close()


async def test_bulk_upsert_of_10000_is_idempotent(store: SqlStore) -> None:
    rows = [candle(i, price=100 + i % 50) for i in range(10_000)]
    assert (await store.upsert_candles(rows)).written == 10_000
    again = await store.upsert_candles(rows)
    assert again.written == 0
    assert again.rejected == []
    stored = await store.candles_in_range(BTC, T0, T0 + 10_000 * M)
    assert stored == rows
    assert await reported_stats(store) == {
        ("BTCUSD", "1m"): (10_000, T0, T0 + 9_999 * M, T0 + 9_999 * M)
    }


async def test_flush_of_200_is_idempotent(store: SqlStore) -> None:
    rows = [candle(i, ETH if i % 2 else BTC, price=100 + i, step=H) for i in range(200)]
    assert (await store.upsert_candles(rows)).written == 200
    assert (await store.upsert_candles(rows)).written == 0
    assert await reported_stats(store) == await counted_stats(store)
    assert len(await store.open_times_in_range(ETH, T0, T0 + 200 * H)) == 100


async def test_mixed_new_changed_and_unchanged_rows(writer: SqlStore) -> None:
    await writer.upsert_candles([candle(i) for i in range(40)])
    batch = (
        [candle(i) for i in range(0, 20)]  # unchanged
        + [candle(i, price=200) for i in range(20, 40)]  # changed
        + [candle(i) for i in range(40, 55)]  # new
    )
    result = await writer.upsert_candles(batch)
    assert result.written == 35
    stored = await writer.candles_in_range(BTC, T0, T0 + 100 * M)
    assert stored == batch
    assert await reported_stats(writer) == await counted_stats(writer)
    assert (await writer.series_stats())[0].candle_count == 55


async def test_duplicate_keys_in_a_batch_last_wins(writer: SqlStore) -> None:
    batch = [
        candle(0, price=1, final=False),
        candle(0, price=2, final=False),
        candle(0, price=3, final=False),
        candle(1, price=5),
        candle(1, price=6, final=False),  # a final is not displaced
        candle(2, price=7, final=False),
        candle(2, price=8),
    ]
    result = await writer.upsert_candles(batch)
    assert result.written == 3
    stored = await writer.candles_in_range(BTC, T0, T0 + 3 * M)
    assert stored == [candle(0, price=3, final=False), candle(1, price=5), candle(2, price=8)]
    assert await reported_stats(writer) == {("BTCUSD", "1m"): (3, T0, T0 + 2 * M, T0 + 2 * M)}


async def test_invalid_rows_are_rejected_quarantined_and_the_rest_land(writer: SqlStore) -> None:
    good = [candle(i) for i in range(5)]
    bad = [
        Candle("BTCUSD", "1m", T0 + 10 * M, math.nan, 2, 1, 1, 1),
        Candle("BTCUSD", "1m", T0 + 11 * M, 1, 1, 2, 1, 1),  # high below low
        Candle("BTCUSD", "1m", T0 + 12 * M + 1, 1, 2, 1, 1, 1),  # not aligned
        Candle("BTCUSD", "1m", T0 + 13 * M, 1, 2, 1, 1, -1),  # negative volume
        Candle("BTCUSD", "7x", T0, 1, 2, 1, 1, 1),  # unknown timeframe
        Candle("BTCUSD", "1m", T0 + 14 * M, 1, 2, 1, math.inf, 1),
    ]
    result = await writer.upsert_candles([*good[:2], *bad, *good[2:]])
    assert result.written == 5
    assert [r.candle for r in result.rejected] == bad
    assert "not finite" in result.rejected[0].reason
    assert "below low" in result.rejected[1].reason
    assert "not aligned" in result.rejected[2].reason
    assert "negative" in result.rejected[3].reason
    assert "7x" in result.rejected[4].reason
    assert await writer.candles_in_range(BTC, T0, T0 + 20 * M) == good
    assert await count_rows(writer, rejected_candles) == len(bad)
    async with writer.engine.connect() as conn:
        rows = (
            (await conn.execute(sa.select(rejected_candles).order_by(rejected_candles.c.id)))
            .mappings()
            .all()
        )
    assert [r["ts"] for r in rows] == [c.ts for c in bad]
    assert rows[1]["symbol"] == "BTCUSD"
    assert "below low" in rows[1]["reason"]
    assert "Candle(" in rows[1]["raw"]


async def test_only_invalid_rows_write_nothing(store: SqlStore) -> None:
    result = await store.upsert_candles([Candle("BTCUSD", "1m", 5, 1, 2, 1, 1, 1)])
    assert result.written == 0
    assert len(result.rejected) == 1
    assert await store.series_stats() == []
    assert (await store.upsert_candles([])).written == 0


@pytest.mark.parametrize(
    ("stored", "incoming", "written", "kept"),
    [
        # a stored final row is never replaced by a non-final one
        (candle(0, price=1), candle(0, price=2, final=False), 0, candle(0, price=1)),
        # ...but a final one with different values replaces it
        (candle(0, price=1), candle(0, price=2), 1, candle(0, price=2)),
        # identical final: nothing to do
        (candle(0, price=1), candle(0, price=1), 0, candle(0, price=1)),
        # a non-final row is updated while it changes
        (
            candle(0, price=1, final=False),
            candle(0, price=2, final=False),
            1,
            candle(0, price=2, final=False),
        ),
        (
            candle(0, price=1, final=False),
            candle(0, price=1, final=False),
            0,
            candle(0, price=1, final=False),
        ),
        # and becomes final even with the same values
        (candle(0, price=1, final=False), candle(0, price=1), 1, candle(0, price=1)),
    ],
)
async def test_final_rule(
    writer: SqlStore, stored: Candle, incoming: Candle, written: int, kept: Candle
) -> None:
    await writer.upsert_candles([stored])
    assert (await writer.upsert_candles([incoming])).written == written
    assert await writer.candles_in_range(BTC, T0, T0 + M) == [kept]
    last_final = T0 if kept.final else None
    assert await reported_stats(writer) == {("BTCUSD", "1m"): (1, T0, T0, last_final)}


async def test_first_and_last_candle(store: SqlStore) -> None:
    assert await store.first_candle(BTC) is None
    assert await store.last_candle(BTC) is None
    await store.upsert_candles([candle(i, final=i < 7) for i in range(10)])
    await store.upsert_candles([candle(3, ETH, step=H)])
    assert await store.first_candle(BTC) == candle(0)
    assert await store.last_candle(BTC) == candle(9, final=False)
    assert await store.last_candle(BTC, final_only=True) == candle(6)
    assert await store.last_candle(ETH) == candle(3, ETH, step=H)


async def test_candles_in_range_bounds_and_limit(store: SqlStore) -> None:
    rows = [candle(i) for i in range(20)]
    await store.upsert_candles(rows)
    assert await store.candles_in_range(BTC, T0 + 5 * M, T0 + 10 * M) == rows[5:10]
    assert await store.candles_in_range(BTC, T0 + 5 * M + 1, T0 + 10 * M + 1) == rows[6:11]
    assert await store.candles_in_range(BTC, T0, T0 + 20 * M, limit=3) == rows[:3]
    assert await store.candles_in_range(BTC, T0, T0 + 20 * M, limit=0) == []
    assert await store.candles_in_range(BTC, T0 + 10 * M, T0 + 10 * M) == []
    assert await store.candles_in_range(ETH, T0, T0 + 20 * M) == []


async def test_open_times_in_range(store: SqlStore) -> None:
    await store.upsert_candles([candle(i) for i in (0, 1, 2, 5, 8)])
    assert await store.open_times_in_range(BTC, T0 + M, T0 + 8 * M) == [
        T0 + M,
        T0 + 2 * M,
        T0 + 5 * M,
    ]
    assert await store.open_times_in_range(BTC, T0 + 9 * M, T0 + 20 * M) == []


async def holes(
    store: SqlStore, series: SeriesKey, start: int, end: int, step: int
) -> list[tuple[int, int]]:
    return (await store.find_missing_ranges_many([(series, start, end, step)])).get(series, [])


async def test_find_missing_ranges_exact_bounds(store: SqlStore) -> None:
    await store.upsert_candles([candle(i) for i in (0, 1, 2, 5, 6, 9, 10)])
    everything = await holes(store, BTC, T0, T0 + 10 * M, M)
    assert everything == [(T0 + 3 * M, T0 + 5 * M), (T0 + 7 * M, T0 + 9 * M)]
    # both window ends are inclusive; holes at the window's edges are not reported
    assert await holes(store, BTC, T0 + 2 * M, T0 + 5 * M, M) == [(T0 + 3 * M, T0 + 5 * M)]
    assert await holes(store, BTC, T0 + 3 * M, T0 + 8 * M, M) == []
    assert await holes(store, BTC, T0 + 6 * M, T0 + 9 * M - 1, M) == []
    assert await holes(store, ETH, T0, T0 + 10 * H, H) == []


async def test_delete_candles_before_in_batches_keeps_stats(store: SqlStore) -> None:
    await store.upsert_candles([candle(i, final=i < 23) for i in range(25)])
    await store.upsert_candles([candle(i, ETH, step=H) for i in range(3)])
    assert await store.delete_candles_before(BTC, T0 + 10 * M, batch_size=3) == 10
    assert await store.open_times_in_range(BTC, T0, T0 + 11 * M) == [T0 + 10 * M]
    assert await reported_stats(store) == await counted_stats(store)
    assert await store.delete_candles_before(BTC, T0 + 10 * M, batch_size=3) == 0
    assert await store.delete_candles_before(BTC, T0 + 24 * M, batch_size=4) == 14
    assert await reported_stats(store) == await counted_stats(store)
    assert (await reported_stats(store))[("BTCUSD", "1m")] == (1, T0 + 24 * M, T0 + 24 * M, None)
    assert await store.delete_candles_before(BTC, T0 + 100 * M) == 1
    stats = {(s.symbol, s.timeframe): s for s in await store.series_stats()}
    gone = stats[("BTCUSD", "1m")]
    assert (gone.candle_count, gone.first_ts, gone.last_ts, gone.last_final_ts) == (
        0,
        None,
        None,
        None,
    )
    assert stats[("ETHUSD", "1h")].candle_count == 3


async def test_series_stats_stay_exact_after_mixed_operations(writer: SqlStore) -> None:
    await writer.upsert_candles([candle(i, final=False) for i in range(0, 30, 2)])
    await writer.upsert_candles([candle(i, price=7) for i in range(0, 30, 3)])
    await writer.delete_candles_before(BTC, T0 + 6 * M, batch_size=2)
    await writer.upsert_candles([candle(i, ETH, step=H, final=i != 4) for i in range(5)])
    await writer.upsert_candles([candle(i, final=False) for i in range(0, 4)])
    await writer.upsert_candles([candle(i, price=9) for i in range(28, 33)])
    assert await reported_stats(writer) == await counted_stats(writer)


async def test_concurrent_writers_keep_stats_exact(store: SqlStore) -> None:
    batches = [[candle(i, price=p) for i in range(p, p + 300)] for p in range(0, 1_200, 150)]
    await asyncio.gather(*(store.upsert_candles(b) for b in batches))
    assert await reported_stats(store) == await counted_stats(store)
    assert (await store.series_stats())[0].candle_count == 1_350


async def test_quarantine_keeps_only_the_newest(database_url: str) -> None:
    from market_data.storage.base import QuarantineItem

    small = open_store(database_url, quarantine_limit=5)
    try:
        await small.upgrade()
        for i in range(8):
            await small.quarantine([QuarantineItem("ws", "BTCUSD", "1m", i, f"row {i}", "bad")])
        assert await count_rows(small, rejected_candles) == 5
        async with small.engine.connect() as conn:
            kept = (await conn.execute(sa.select(rejected_candles.c.raw))).scalars().all()
        assert sorted(kept) == [f"row {i}" for i in range(3, 8)]
        await small.quarantine([QuarantineItem("ws", None, None, None, "x" * 10_000, "y")])
        assert await count_rows(small, rejected_candles) == 5
    finally:
        await small.close()


async def test_checkpoint_is_safe_to_call_any_time(store: SqlStore) -> None:
    await store.checkpoint()
    await store.upsert_candles([candle(i) for i in range(3)])
    await store.checkpoint()
    assert len(await store.open_times_in_range(BTC, T0, T0 + 3 * M)) == 3
