"""`Store.candle_columns`: keyset chunks as columns, on SQLite and PostgreSQL, against
`candles_in_range` (the row-by-row read) as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from market_data.models import Candle, SeriesKey
from market_data.storage.sql import SqlStore
from market_data.timeframes import MINUTE_MS, align

T0 = align(1_767_225_600_000, "1d")  # 2026-01-01T00:00:00Z
BTC = SeriesKey("BTCUSD", "1m")
# Values that a lossy path (text with 15 digits, float32) would change.
AWKWARD = [0.1 + 0.2, 1e-300, 123456789.12345678, 5e-324, 1.7976931348623157e308, 1 / 3]


def _rows(series: SeriesKey, count: int, step: int = MINUTE_MS) -> list[Candle]:
    out = []
    for i in range(count):
        a, b = sorted((AWKWARD[i % 6], AWKWARD[(i + 1) % 6]))
        out.append(
            Candle(
                series.symbol,
                series.timeframe,
                T0 + i * step,
                a,
                b,
                a,
                b,
                AWKWARD[(i + 2) % 6],
                i % 3 != 0,
            )
        )
    return out


async def _collect(store: SqlStore, series: SeriesKey, start: int, end: int, **kw: int) -> list:
    chunks = [c async for c in store.candle_columns(series, start, end, **kw)]
    for chunk in chunks:
        assert chunk.symbol == series.symbol
        assert chunk.timeframe == series.timeframe
        assert chunk.ts.dtype == np.int64
        assert chunk.open.dtype == np.float64
        assert chunk.final.dtype == np.bool_
    return chunks


def _as_candles(chunks: list) -> list[Candle]:
    return [
        Candle(c.symbol, c.timeframe, int(ts), o, h, lo, cl, v, bool(f))
        for c in chunks
        for ts, o, h, lo, cl, v, f in zip(
            c.ts.tolist(),
            c.open.tolist(),
            c.high.tolist(),
            c.low.tolist(),
            c.close.tolist(),
            c.volume.tolist(),
            c.final.tolist(),
            strict=True,
        )
    ]


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 50_000])
async def test_chunks_equal_the_row_read_exactly(store: SqlStore, chunk_rows: int) -> None:
    rows = _rows(BTC, 103)
    await store.upsert_candles(rows)
    await store.upsert_candles(_rows(SeriesKey("ETHUSD", "1m"), 20))  # another series: not read
    await store.upsert_candles(_rows(SeriesKey("BTCUSD", "5m"), 20, 5 * MINUTE_MS))
    chunks = await _collect(store, BTC, 0, 2**62, chunk_rows=chunk_rows)
    assert [len(c) for c in chunks][:-1] == [chunk_rows] * (len(chunks) - 1)
    got = _as_candles(chunks)
    assert got == await store.candles_in_range(BTC, 0, T0 + 10**9, limit=10_000)
    assert got == rows  # bit for bit: every awkward float and the final flags survive
    assert all(math.copysign(1, a.low) == math.copysign(1, b.low) for a, b in zip(got, rows))


async def test_ranges_limits_and_empty(store: SqlStore) -> None:
    rows = _rows(BTC, 40)
    await store.upsert_candles(rows)
    start, end = T0 + 5 * MINUTE_MS, T0 + 25 * MINUTE_MS  # [start, end)
    assert _as_candles(await _collect(store, BTC, start, end, chunk_rows=6)) == rows[5:25]
    assert _as_candles(await _collect(store, BTC, start + 1, end + 1, chunk_rows=6)) == rows[6:26]
    limited = await _collect(store, BTC, 0, 2**62, chunk_rows=6, limit=15)
    assert [len(c) for c in limited] == [6, 6, 3]
    assert _as_candles(limited) == rows[:15]
    assert await _collect(store, BTC, end, start) == []
    assert await _collect(store, SeriesKey("NOPEUSD", "1m"), 0, 2**62) == []
    assert await _collect(store, BTC, 0, 2**62, limit=0) == []
    # Out-of-range bounds are clamped, not passed to the engine.
    assert len(_as_candles(await _collect(store, BTC, -(2**62), 2**63))) == 40


async def test_names_that_need_quoting_are_safe(store: SqlStore) -> None:
    await store.upsert_candles(_rows(BTC, 3))
    for name in ("BTCUSD' OR '1'='1", "x'); DROP TABLE candles; --", "BTC\\USD"):
        assert await _collect(store, SeriesKey(name, "1m"), 0, 2**62) == []
    assert len(_as_candles(await _collect(store, BTC, 0, 2**62))) == 3
