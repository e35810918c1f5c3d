"""Coverage of one series: which stretches are stored, proven empty, gaps, failed or unknown.

Composed from what is already recorded, never by reading candles row by row, so a year of 1m
costs what its gap rows and empty ranges cost (O(gaps + empty ranges)):

* the series' first and last candle (`series_stats`) bound what is stored;
* inside the range gap detection has checked (`detect_low` .. `watermark`), everything not
  recorded as a gap or an empty range is stored: that is what checking means;
* gap rows paint over it: open -> `gap`, failed -> `failed`, repaired -> `stored`,
  empty -> `empty`; recorded empty ranges (no trades) -> `empty`;
* the part not checked yet (usually the tail between the watermark and the newest candle) is
  searched for holes with one bounded query when it spans at most `SCAN_LIMIT` periods; holes
  there are `unknown` (not stored, not recorded). A larger unchecked part is `stored` only when the
  series' candle count proves it has no hole at all, otherwise `unknown`;
* everything else (before the first candle, after the newest) is `unknown`: never fetched.

Rows deleted by hand behind the watermark are not seen until a full detection
(`market-data gaps detect --full`), exactly as for the gap detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from market_data import timeframes as tfm
from market_data.models import SeriesKey
from market_data.ranges import Range, missing_runs, subtract
from market_data.storage.base import CoverageRecords, Store

State = Literal["stored", "empty", "gap", "failed", "unknown"]
STATES: tuple[State, ...] = ("unknown", "stored", "empty", "gap", "failed")
# Where layers overlap the higher wins: what still needs work shows over what is settled.
_RANK: dict[str, int] = {state: rank for rank, state in enumerate(STATES)}
_GAP_STATE: dict[str, State] = {
    "open": "gap",
    "failed": "failed",
    "repaired": "stored",
    "empty": "empty",
}
# Most periods of not-yet-checked candles searched for holes per request (one window query).
SCAN_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class Run:
    """[start, end) in epoch ms, all in one state."""

    start: int
    end: int
    state: State


@dataclass(frozen=True, slots=True)
class Coverage:
    start: int
    end: int
    runs: list[Run]
    # Too many gap rows or empty ranges to list: the runs stop at `end`, which is earlier
    # than asked; ask again from there.
    truncated: bool


def merge_runs(layers: Iterable[tuple[int, int, State]], start: int, end: int) -> list[Run]:
    """Flatten overlapping [start, end) layers into consecutive runs covering [start, end).

    Where layers overlap, the highest-ranked state wins (failed > gap > empty > stored >
    unknown); where none lies, the state is `unknown`. Neighbouring runs of the same state are
    merged. A sweep over the layers' edges: O(n log n) in the number of layers.
    """
    if end <= start:
        return []
    # Each edge packed in one int (time, then opening flag and rank in the low bits): sorting
    # plain ints is several times faster than sorting tuples, and a year of 1m has thousands.
    events: list[int] = []
    add = events.append
    for a, b, state in layers:
        a, b = max(a, start), min(b, end)
        if a < b:
            rank = _RANK[state]
            add((a << 4) | _OPENS | rank)
            add((b << 4) | rank)
    events.sort()
    active = [0] * len(STATES)
    best = 0  # the highest rank with an open layer (0: unknown)
    starts: list[int] = []
    ranks: list[int] = []
    cursor, current = start, -1
    for event in events:
        at = event >> 4
        if at > cursor:
            if best != current:  # a new run begins at the cursor
                starts.append(cursor)
                ranks.append(best)
                current = best
            cursor = at
        code = event & 15
        if code & _OPENS:
            rank = code & 7
            active[rank] += 1
            if rank > best:
                best = rank
        else:
            active[code] -= 1
            while best and not active[best]:
                best -= 1
    if end > cursor and best != current:
        starts.append(cursor)
        ranks.append(best)
    ends = [*starts[1:], end]
    return [Run(a, b, STATES[r]) for a, b, r in zip(starts, ends, ranks, strict=True)]


_OPENS = 8  # the flag bit of an opening edge (ranks take the bits below)


def stored_span(records: CoverageRecords, timeframe: str) -> Range | None:
    """[first candle, end of the newest candle's period), or None with nothing stored."""
    if records.first_ts is None or records.last_ts is None:
        return None
    return records.first_ts, tfm.next_open(records.last_ts, timeframe)


def checked_span(records: CoverageRecords, timeframe: str) -> Range | None:
    """The periods gap detection has checked: [detect_low, end of the watermark's period)."""
    if records.detect_low is None or records.watermark is None:
        return None
    if records.watermark < records.detect_low:
        return None
    return records.detect_low, tfm.next_open(records.watermark, timeframe)


def unchecked_windows(records: CoverageRecords, timeframe: str) -> list[Range]:
    """Closed ranges [a, b] of stored open times detection has not checked: holes among the
    candles in them are found by one window query each (both ends are stored candles or the
    checked range's edges)."""
    span = stored_span(records, timeframe)
    if span is None or records.last_ts is None:
        return []
    first, last = span[0], records.last_ts
    checked = checked_span(records, timeframe)
    if checked is None or checked[1] <= first or checked[0] > last:
        return [(first, last)]
    windows: list[Range] = []
    low, high = checked[0], tfm.previous_open(checked[1], timeframe)  # high = the watermark
    if first < low:
        windows.append((first, low))
    if high < last:
        windows.append((high, last))
    return windows


def count_scan_periods(windows: Sequence[Range], timeframe: str) -> int:
    return sum(tfm.count_periods(a, tfm.next_open(b, timeframe), timeframe) for a, b in windows)


def has_no_hole(records: CoverageRecords, timeframe: str) -> bool:
    """The maintained candle count equals the periods from first to last: nothing is missing."""
    span = stored_span(records, timeframe)
    if span is None:
        return False
    return records.candle_count == tfm.count_periods(span[0], span[1], timeframe)


def compose(
    records: CoverageRecords,
    timeframe: str,
    start: int,
    end: int,
    scanned: Sequence[Range] | None,
    holes: Sequence[Range],
) -> Coverage:
    """The runs of [start, end) from the records. `scanned`: the unchecked windows that were
    searched, `holes` the [start, end) holes found in them; None when they were too large to
    search (they stay `unknown`)."""
    span = stored_span(records, timeframe)
    layers: list[tuple[int, int, State]] = []
    if span is not None:
        checked = checked_span(records, timeframe)
        if has_no_hole(records, timeframe):
            layers.append((span[0], span[1], "stored"))
        else:
            if checked is not None:
                layers.append((max(span[0], checked[0]), min(span[1], checked[1]), "stored"))
            for a, b in scanned or ():
                window = [(a, tfm.next_open(b, timeframe))]
                for piece in subtract(window, holes):
                    layers.append((piece[0], piece[1], "stored"))
    for gap_start, gap_end, status in records.gaps:
        layers.append((gap_start, gap_end, _GAP_STATE.get(status, "gap")))
    for empty_start, empty_end in records.empty:
        layers.append((empty_start, empty_end, "empty"))
    stop = end
    if records.complete_until is not None and records.complete_until < end:
        stop = max(start, records.complete_until)
    return Coverage(start, stop, merge_runs(layers, start, stop), stop < end)


# Without a start and with nothing stored: this many periods before the end.
DEFAULT_PERIODS = 1_000


async def series_coverage(store: Store, series: SeriesKey, start: int | None, end: int) -> Coverage:
    """Coverage of [start, end) (start None: from the first stored candle): the records in one
    store call, plus one bounded hole search over the part detection has not checked yet."""
    tf = series.timeframe
    records = await store.coverage_records(series, start or 0, end)
    if start is None:
        fallback = max(0, end - DEFAULT_PERIODS * tfm.nominal_ms(tf))
        start = records.first_ts if records.first_ts is not None else fallback
        start = min(start, max(0, end - 1))
    scanned: list[Range] | None = None
    holes: list[Range] = []
    if not has_no_hole(records, tf):
        # Whole windows, not clipped to [start, end): a hole is only seen between two stored
        # candles, so a clipped window could start inside one and call it stored.
        windows = [
            (a, b)
            for a, b in unchecked_windows(records, tf)
            if a < end and tfm.next_open(b, tf) > start
        ]
        if count_scan_periods(windows, tf) <= SCAN_LIMIT:
            scanned = windows
            for a, b in windows:
                holes += await _holes(store, series, a, b)
    return compose(records, tf, start, end, scanned, holes)


async def _holes(store: Store, series: SeriesKey, first: int, last: int) -> list[Range]:
    tf = series.timeframe
    if tfm.is_fixed(tf):
        found = await store.find_missing_ranges_many([(series, first, last, tfm.duration_ms(tf))])
        return found.get(series, [])
    stored = await store.open_times_in_range(series, first, tfm.next_open(last, tf))
    if not stored:
        return [(first, tfm.next_open(last, tf))]
    return missing_runs(tfm.expected_opens(stored[0], stored[-1], tf), set(stored), tf)
