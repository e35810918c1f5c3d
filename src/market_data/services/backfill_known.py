"""What a backfill still has to fetch: per series, its range minus what is known (the span from
the first stored candle to the last stored final one, and the ranges the exchange answered
empty), never older than the timeframe's retention or the store's retention horizon."""

from __future__ import annotations

from collections.abc import Mapping

from market_data.config import Settings
from market_data.models import SeriesKey
from market_data.ranges import Range, subtract
from market_data.storage.base import Store
from market_data.timeframes import ceil_open, next_open


def lower_bound(
    settings: Settings, key: SeriesKey, start: int, now: int, horizon: int | None
) -> int:
    """The oldest open time a backfill of `key` from `start` may fetch."""
    lower = start
    retention = settings.retention_ms(key.timeframe)
    if retention is not None:
        lower = max(lower, now - retention)
    if horizon is not None:
        lower = max(lower, horizon)
    return ceil_open(lower, key.timeframe)


async def missing_windows(
    store: Store, settings: Settings, ranges: Mapping[SeriesKey, tuple[int, int]], now: int
) -> dict[SeriesKey, list[Range]]:
    """The windows still to fetch per series in its [start, end), from three reads for all the
    series (their stats, retention horizons and empty ranges), not a few per series: with
    hundreds of series the plan takes well under a second."""
    stats = {SeriesKey(s.symbol, s.timeframe): s for s in await store.series_stats()}
    horizons = {k: v[2] for k, v in (await store.scan_states()).items()}
    result: dict[SeriesKey, list[Range]] = {}
    bounds: dict[SeriesKey, tuple[int, int]] = {}
    for key, (start, end) in ranges.items():
        lower = lower_bound(settings, key, start, now, horizons.get(key))
        windows = [(lower, end)] if lower < end else []
        st = stats.get(key)
        if windows and st is not None and st.first_ts is not None:
            last = st.last_final_ts
            known_end = next_open(last, key.timeframe) if last is not None else st.first_ts
            windows = subtract(windows, [(st.first_ts, known_end)])
        result[key] = windows
        if windows:
            bounds[key] = (lower, end)
    if bounds:
        empty = await store.empty_ranges_many(bounds)
        for key in bounds:
            result[key] = subtract(result[key], empty.get(key, []))
    return result
