"""Gap detection: where a stored series has holes between its first and last closed candle.

The holes are found in SQL (`store.find_missing_ranges`) and only over what changed since the
previous cycle, so a cycle's cost follows the new rows, not the history:

* the tail: from the series' watermark (the newest closed candle the previous cycle checked) to
  its newest closed candle now;
* the head: when older history was backfilled since (the series' first candle moved earlier),
  from the new first candle to the old one.

A series never scanned before is scanned whole, once. Ranges the exchange already answered with no
candles (no trades then) are subtracted, and nothing older than the series' retention cut-off (or
the horizon the cleanup recorded) is ever reported, so a purged range is never fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from market_data import timeframes as tfm
from market_data.models import SeriesKey, SeriesStats
from market_data.storage.base import Store

log = logging.getLogger(__name__)

Range = tuple[int, int]
# A page of known-empty ranges shorter than this is the last one (the store lists up to 10,000).
_EMPTY_PAGE_MIN = 1000


def subtract_ranges(holes: Iterable[Range], known: Sequence[Range]) -> list[Range]:
    """The parts of `holes` not covered by `known` (all half-open [start, end) ranges)."""
    ordered = sorted(known)
    result: list[Range] = []
    for start, end in holes:
        cursor = start
        for k_start, k_end in ordered:
            if k_end <= cursor or k_start >= end:
                continue
            if k_start > cursor:
                result.append((cursor, k_start))
            cursor = max(cursor, k_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def missing_runs(expected: Iterable[int], present: set[int], timeframe: str) -> list[Range]:
    """Contiguous runs of `expected` open times absent from `present`, as [start, end) ranges."""
    runs: list[Range] = []
    run_start: int | None = None
    for ts in expected:
        if ts in present:
            if run_start is not None:
                runs.append((run_start, ts))
                run_start = None
        elif run_start is None:
            run_start = ts
        last = ts
    if run_start is not None:
        runs.append((run_start, tfm.next_open(last, timeframe)))
    return runs


def ceil_open(ts_ms: int, timeframe: str) -> int:
    """The first period open time >= ts_ms."""
    aligned = tfm.align(ts_ms, timeframe)
    return aligned if aligned == ts_ms else tfm.next_open(aligned, timeframe)


@dataclass(slots=True)
class _ScanState:
    """What the detector has checked of one series: stored candles in [low, high]."""

    low: int
    high: int


class GapDetector:
    """Finds holes per series incrementally. One instance lives as long as its GapService.

    The checked range of each series ([detect_low, watermark]) is persisted through the store, so
    a restart resumes where the previous process stopped, and cached here, so a cycle in which a
    series did not change costs no query for it.
    """

    def __init__(
        self,
        store: Store,
        retention_ms: Callable[[str], int | None],
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._retention_ms = retention_ms
        self._clock = clock
        self._state: dict[SeriesKey, _ScanState | None] = {}
        self._horizons: dict[SeriesKey, int | None] = {}

    async def floor(self, series: SeriesKey, now_ms: int) -> int:
        """Oldest open time detection and repair may touch for this series."""
        bound = 0
        retention = self._retention_ms(series.timeframe)
        if retention is not None:
            bound = max(bound, ceil_open(now_ms - retention, series.timeframe))
        if series not in self._horizons:
            self._horizons[series] = await self._store.get_retention_horizon(series)
        horizon = self._horizons[series]
        if horizon is not None:
            bound = max(bound, ceil_open(horizon, series.timeframe))
        return bound

    async def scan(
        self, series: SeriesKey, stats: SeriesStats | None, *, full: bool = False,
        extra_floor: int = 0,
    ) -> list[Range]:
        """Holes in `series` not known to be empty, within what changed since the last scan."""
        tf = series.timeframe
        if stats is None or stats.first_ts is None or stats.last_final_ts is None:
            return []
        now = self._clock()
        # Only closed candles bound a gap; trust the clock over a row's final flag.
        high = min(stats.last_final_ts, tfm.last_closed_open(now, tf))
        floor = max(await self.floor(series, now), extra_floor)
        low = max(stats.first_ts, floor)
        if high <= low:
            return []
        state = None if full else await self._load(series)
        windows = _windows(state, low, high)
        if not windows:
            return []
        holes: list[Range] = []
        for start, end in windows:
            holes.extend(await self._holes(series, start, end))
        await self._save(series, state, _ScanState(low, high))
        if not holes:
            return []
        lo, hi = min(h[0] for h in holes), max(h[1] for h in holes)
        empties = await self._empty_ranges(series, lo, hi)
        return [r for r in subtract_ranges(holes, empties) if r[0] >= floor]

    async def _load(self, series: SeriesKey) -> _ScanState | None:
        if series not in self._state:
            high = await self._store.get_watermark(series)
            low = await self._store.get_detect_low(series)
            self._state[series] = None if high is None or low is None else _ScanState(low, high)
        return self._state[series]

    async def _save(self, series: SeriesKey, old: _ScanState | None, new: _ScanState) -> None:
        # Keep the widest checked range: a cut-off that moved `low` up needs no re-check later.
        if old is not None and old.low <= new.low and new.low <= old.high:
            new.low = old.low
        if old is None or new.high != old.high:
            await self._store.set_watermark(series, new.high)
        if old is None or new.low != old.low:
            await self._store.set_detect_low(series, new.low)
        self._state[series] = new

    async def _empty_ranges(self, series: SeriesKey, start: int, end: int) -> list[Range]:
        """Every known-empty range overlapping [start, end), paging past the store's limit."""
        result: list[Range] = []
        cursor = start
        while cursor < end:
            page = await self._store.empty_ranges(series, cursor, end)
            result.extend(page)
            if not page or page[-1][1] <= cursor or len(page) < _EMPTY_PAGE_MIN:
                break
            cursor = page[-1][1]
        return result

    async def _holes(self, series: SeriesKey, start: int, end: int) -> list[Range]:
        tf = series.timeframe
        if tfm.is_fixed(tf):
            return await self._store.find_missing_ranges(series, start, end, tfm.duration_ms(tf))
        # Months have no fixed length; there are only twelve a year, so compare in Python.
        stored = await self._store.open_times_in_range(series, start, tfm.next_open(end, tf))
        if not stored:
            return []
        return missing_runs(tfm.expected_opens(stored[0], stored[-1], tf), set(stored), tf)


def _windows(state: _ScanState | None, low: int, high: int) -> list[Range]:
    """Closed ranges [start, end] of stored open times to check: all of [low, high] the first
    time, then only the head (older history backfilled since) and the tail (new candles)."""
    if state is None or state.high < low or state.low > high:
        return [(low, high)]
    windows: list[Range] = []
    if low < state.low:
        windows.append((low, state.low))
    if high > state.high:
        windows.append((max(low, state.high), high))
    return windows
