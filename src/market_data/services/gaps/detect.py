"""Gap detection: where a stored series has holes between its first and last closed candle.

The holes are found in SQL (`store.find_missing_ranges_many`: a window query per series, all
series in one statement) and only over what changed since the previous cycle, so a cycle's cost
follows the new rows, not the history:

* the tail: from the series' watermark (the newest closed candle the previous cycle checked) to
  its newest closed candle now;
* the head: when older history was backfilled since (the series' first candle moved earlier),
  from the new first candle to the old one.

A series never scanned before is scanned whole, once. Rows deleted by hand behind the watermark
are only seen by a full scan (`gaps detect --full`). Ranges the exchange already answered with no
candles (no trades then) are subtracted, and nothing older than the series' retention cut-off (or
the horizon the cleanup recorded) is ever reported, so a purged range is never fetched again.

Periods the live stream watches and REST has not confirmed yet (`ScanRequest.unconfirmed`: the
oldest of them) are not gaps yet: the check against REST records them empty or writes their
candle. A series' scan stops before them and its watermark stays behind them, at a stored
candle (a hole reaching into them is looked at again, whole, once they are confirmed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from market_data import timeframes as tfm
from market_data.models import SeriesKey, SeriesStats
from market_data.ranges import Range, missing_runs, subtract
from market_data.storage.base import Store


@dataclass(slots=True)
class _ScanState:
    """What the detector has checked of one series: stored candles in [low, high]."""

    low: int
    high: int


@dataclass(frozen=True, slots=True)
class ScanRequest:
    series: SeriesKey
    stats: SeriesStats | None
    extra_floor: int = 0  # e.g. a derived series' source retention
    unconfirmed: int | None = None  # the oldest open time still to be confirmed, if any


class GapDetector:
    """Finds holes in many series per cycle with a handful of queries.

    The checked range of each series ([detect_low, watermark]) is kept in the store, so a restart
    resumes where the previous process stopped; it is read for every series in one query per
    cycle, the windows of every changed series are searched in one query, and the new ranges
    written in one transaction.
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

    def floor(self, series: SeriesKey, now_ms: int, horizon: int | None) -> int:
        """Oldest open time detection and repair may touch for this series."""
        bound = 0
        retention = self._retention_ms(series.timeframe)
        if retention is not None:
            bound = max(bound, tfm.ceil_open(now_ms - retention, series.timeframe))
        if horizon is not None:
            bound = max(bound, tfm.ceil_open(horizon, series.timeframe))
        return bound

    async def scan(
        self, requests: Sequence[ScanRequest], *, full: bool = False
    ) -> dict[SeriesKey, list[Range]]:
        """Holes not known to be empty, per series, within what changed since the last scan
        (`full`: within everything stored)."""
        now = self._clock()
        states = await self._store.scan_states()
        queries: list[tuple[SeriesKey, int, int, int]] = []
        monthly: list[tuple[SeriesKey, int, int]] = []
        floors: dict[SeriesKey, int] = {}
        scanned: dict[SeriesKey, tuple[_ScanState | None, int, int]] = {}  # -> (old, low, high)
        caps: dict[SeriesKey, int] = {}  # -> the oldest unconfirmed open time, within the scan
        for request in requests:
            series, stats = request.series, request.stats
            if stats is None or stats.first_ts is None or stats.last_final_ts is None:
                continue
            tf = series.timeframe
            low_seen, high_seen, horizon = states.get(series, (None, None, None))
            # Only closed candles bound a gap; trust the clock over a row's final flag.
            high = min(stats.last_final_ts, tfm.last_closed_open(now, tf))
            floor = max(self.floor(series, now, horizon), request.extra_floor)
            low = max(stats.first_ts, floor)
            cap = request.unconfirmed
            scan_high = high
            if cap is not None and cap <= high:
                caps[series] = cap
                scan_high = tfm.previous_open(cap, tf)
            if scan_high <= low:
                continue
            floors[series] = floor
            old = None if low_seen is None or high_seen is None else _ScanState(low_seen, high_seen)
            scanned[series] = (old, low, scan_high)
            for start, end in [(low, scan_high)] if full else _windows(old, low, scan_high):
                # A capped scan still reads up to `high`: a hole may reach across the cap.
                end = high if end == scan_high else end
                if tfm.is_fixed(tf):
                    queries.append((series, start, end, tfm.duration_ms(tf)))
                else:
                    monthly.append((series, start, end))
        holes = await self._store.find_missing_ranges_many(queries) if queries else {}
        for series, start, end in monthly:
            holes.setdefault(series, []).extend(await self._monthly_holes(series, start, end))
        to_save: dict[SeriesKey, tuple[int, int]] = {}
        for series, (old, low, scan_high) in scanned.items():
            if series in caps:
                holes[series], scan_high = _before(
                    holes.get(series, []), caps[series], scan_high, series.timeframe
                )
            new = _merged(old, low, scan_high)
            if old is None or (new.low, new.high) != (old.low, old.high):
                to_save[series] = (new.low, new.high)
        if to_save:
            await self._store.set_scan_states(to_save)
        holes = {series: found for series, found in holes.items() if found}
        windows = {
            series: (min(h[0] for h in found), max(h[1] for h in found))
            for series, found in holes.items()
        }
        empties = await self._store.empty_ranges_many(windows) if windows else {}
        result: dict[SeriesKey, list[Range]] = {}
        for series, found in holes.items():
            fresh = subtract(found, empties.get(series, []))
            fresh = [r for r in fresh if r[0] >= floors[series]]
            if fresh:
                result[series] = fresh
        return result

    async def _monthly_holes(self, series: SeriesKey, start: int, end: int) -> list[Range]:
        # Months have no fixed length; there are only twelve a year, so compare in Python.
        tf = series.timeframe
        stored = await self._store.open_times_in_range(series, start, tfm.next_open(end, tf))
        if not stored:
            return []
        return missing_runs(tfm.expected_opens(stored[0], stored[-1], tf), set(stored), tf)


def _before(holes: list[Range], cap: int, scan_high: int, tf: str) -> tuple[list[Range], int]:
    """The holes wholly before `cap` (the oldest unconfirmed period), and where the scan may
    say it checked up to: a hole reaching across the cap is left for a later scan, so the
    watermark stays at the stored candle before it."""
    kept: list[Range] = []
    high = scan_high
    for start, end in holes:
        if end <= cap:
            kept.append((start, end))
        elif start <= scan_high:
            high = min(high, tfm.previous_open(start, tf))
    return kept, high


def _merged(old: _ScanState | None, low: int, high: int) -> _ScanState:
    """The checked range after this scan: a cut-off that moved `low` up needs no re-check."""
    if old is not None and old.low <= low <= old.high:
        return _ScanState(old.low, high)
    return _ScanState(low, high)


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
