"""Half-open time ranges [start, end) in epoch ms: the one home of range arithmetic.

Gaps, empty ranges, backfill windows and scan windows are all such ranges; subtracting known
ranges from wanted ones and finding the missing runs among expected open times is done here.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from market_data.timeframes import align, duration_ms, is_fixed, next_open, previous_open

Range = tuple[int, int]


def subtract(ranges: Iterable[Range], cut: Iterable[Range]) -> list[Range]:
    """The parts of `ranges` not covered by `cut`, ascending; empty pieces are dropped."""
    ordered = sorted(c for c in cut if c[0] < c[1])
    result: list[Range] = []
    for start, end in sorted(ranges):
        cursor = start
        for c_start, c_end in ordered:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                result.append((cursor, c_start))
            cursor = max(cursor, c_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def missing_runs(expected: Iterable[int], present: set[int], timeframe: str) -> list[Range]:
    """Contiguous runs of `expected` open times absent from `present`, as [start, end) ranges."""
    runs: list[Range] = []
    run_start: int | None = None
    last = 0
    for ts in expected:
        if ts in present:
            if run_start is not None:
                runs.append((run_start, ts))
                run_start = None
        elif run_start is None:
            run_start = ts
        last = ts
    if run_start is not None:
        runs.append((run_start, next_open(last, timeframe)))
    return runs


def empty_slots(stamps: Sequence[int], end: int, tf: str) -> list[Range]:
    """Ranges with no candle between the first stamp and `end`, given the (sorted or not) open
    times an exchange page returned for that whole span."""
    ranges: list[Range] = []
    ordered = sorted(stamps)
    if ordered and is_fixed(tf) and align(ordered[0], tf) == ordered[0]:
        # A page without holes (the common case) is checked in C, not stamp by stamp.
        step = duration_ms(tf)
        if ordered == list(range(ordered[0], ordered[-1] + step, step)):
            hole_start = ordered[-1] + step
            return [(hole_start, end)] if hole_start < end else []
    for ts, following in zip(ordered, [*ordered[1:], None], strict=True):
        hole_start = next_open(ts, tf)
        hole_end = end if following is None else min(following, end)
        if hole_start < hole_end:
            ranges.append((hole_start, hole_end))
    return ranges


def proven_empty(
    stamps: Sequence[int], start: int | None, end: int, now: int, tf: str, *, refused: int = 0
) -> list[Range]:
    """The periods an exchange answer proves had no trades: the ones inside what it covers
    without a row (Bitfinex sends only traded periods).

    `stamps` are the open times of the rows the answer returned for [start, end). `start` is
    None when the answer says nothing before its oldest row (a page cut at its row limit on
    that side, a WebSocket snapshot); otherwise [start, first row) is proven too, or the whole
    [start, end) when there is no row. The caller passes an `end` no further than the answer
    reaches (a full page: one period after its newest row). Two rules hold for every answer:
    - The newest ended period (as of `now`) is left out: the exchange may publish it a moment
      late, and an empty range is never looked at again.
    - An answer with refused rows (`refused` > 0) proves nothing: a refused row may have stood
      for any period, its time may be the broken field.
    """
    if refused:
        return []
    limit = min(end, previous_open(align(now, tf), tf))
    if not stamps:
        if start is None or start >= limit:
            return []
        return [(start, limit)]
    first = min(stamps)
    # Bounded like the rest: the first row may be the open period, after the newest ended one.
    head_end = min(first, limit)
    head = [(start, head_end)] if start is not None and head_end > start else []
    return head + empty_slots(stamps, limit, tf)
