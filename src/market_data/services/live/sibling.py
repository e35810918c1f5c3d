"""Confirm a coarser live series from its 1m sibling's check, without requests of its own.

When a pair streams 1m and a coarser native timeframe (5m .. 1d), a check of the 1m series
(`final_check.py`) proves every minute of the span it took: the stored 1m candles now equal the
exchange's, and the minutes without one are recorded empty. A coarser period whose every minute
is so proven is exactly the aggregate of its 1m candles (open of the first, close of the last,
highest high, lowest low, summed volume: `derived.aggregate`). So it is confirmed here, from the
store: the stored coarser candle is compared with the aggregate and written (through the same
path as the check's corrections, source `ws_reconcile`) when missing or different; a period
without a 1m candle is recorded empty. The coarser series' pending span is then settled up to
the last such period. Confirming the no-trade periods of a pair streamed on 1m and 1h so costs
one request an hour, not two.

Coverage: per 1m series, the run of minutes its checks proved, [start, end). A check takes the
series' span from its oldest pending period, and what it leaves unproven is pending again from
its first unproven period on, so successive checks extend one contiguous run. Only whole coarser
periods inside the run count.

A coarser series waits for its sibling (its own check is never due) while that can confirm its
oldest pending period: the 1m series is watched, its run (before its first check: its pending
span) starts at or before that period, and no check stalled inside it (left minutes unproven:
refused rows, a truncated page; or found a stored 1m candle the exchange does not have, which
would skew the aggregate). Otherwise the coarser series keeps its own REST check, exactly as
before. 1w, 14d and 1M keep theirs too: a week of minutes is more than a page.

A watched 1m series starts at the period its coarser siblings start theirs at (the one before
the running one), so its first check covers their first periods too.

Volumes: summed with `math.fsum`, as derived timeframes are, then rounded to the exchange's
amount precision (8 decimals): its coarser volume is the decimal sum of its 1m volumes, and the
rounded float sum is that figure, not one a few ulps off. The range checker compares values
exactly; here prices are compared exactly (they are picked, not computed) and volumes within
half a unit of that precision (or a few ulps of very large volumes), so float noise in a sum
never rewrites a correct candle.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from market_data.models import Candle, SeriesKey
from market_data.ranges import Range
from market_data.services.derived import aggregate
from market_data.services.live.pending import UncheckedFinals
from market_data.services.range_check import WriteCandles
from market_data.storage.base import Store
from market_data.timeframes import (
    MINUTE_MS,
    align,
    duration_ms,
    expected_opens,
    next_open,
    previous_open,
)

log = logging.getLogger("market_data.services.ws_final_check")

SOURCE_TF = "1m"
# Native, fixed and whole minutes aligned on minutes; a period fits in one page of minutes.
COARSE_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d")
VOLUME_DECIMALS = 8  # the exchange's amount precision
_VOLUME_ABS_TOL = 0.5 * 10.0**-VOLUME_DECIMALS
_VOLUME_REL_TOL = 8 * sys.float_info.epsilon
READ_MINUTES = 10_000  # 1m rows read per round trip: bounds memory on a long span


def sibling_of(series: SeriesKey) -> SeriesKey | None:
    """The 1m series that can confirm this one, if its timeframe allows."""
    if series.timeframe not in COARSE_TIMEFRAMES:
        return None
    return SeriesKey(series.symbol, SOURCE_TF)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Minutes of a 1m series its checks proved: [start, end); `stalled` is where the latest
    check left minutes unproven (None: it proved all it took)."""

    start: int
    end: int
    stalled: int | None = None


def extend(cov: Coverage | None, start: int, end: int, stalled: int | None) -> Coverage:
    """The run after a check proved [start, end) (`end` <= `stalled` when it stalled)."""
    end = max(start, end)
    if cov is not None and end < cov.start:
        return cov  # an older re-check (a late correction): the run stands
    if cov is None or start > cov.end:
        return Coverage(start, end, stalled)  # a new run: what was before it is not joined
    return Coverage(min(cov.start, start), max(cov.end, end), stalled)


def waits(oldest: int, tf: str, cov: Coverage | None, source_next: int | None) -> bool:
    """Whether a coarser series whose oldest pending period opens at `oldest` is left to its
    sibling: the sibling's run (`cov`, alive while its next minute to check, `source_next`, is
    inside it or right after it) starts at or before that period and has not stalled in it."""
    if cov is not None and (source_next is None or source_next <= cov.end):
        run_start, stalled = cov.start, cov.stalled
    elif source_next is not None:
        run_start, stalled = source_next, None  # the next check starts a run there
    else:
        return False
    if oldest < run_start:
        return False
    return stalled is None or stalled >= next_open(oldest, tf)


def whole_periods(cov: Coverage, first: int, last: int, tf: str) -> Range | None:
    """[start, end) of the `tf` periods opening at `first` .. `last` whose minutes all lie in
    the run, or None."""
    if first < cov.start:
        return None
    end = min(next_open(last, tf), align(cov.end, tf))
    return (first, end) if end > first else None


def same_candle(held: Candle, want: Candle) -> bool:
    """Equal for the check: prices exactly, volumes within the float noise of a sum."""
    return (
        (held.open, held.high, held.low, held.close) == (want.open, want.high, want.low, want.close)
    ) and math.isclose(held.volume, want.volume, rel_tol=_VOLUME_REL_TOL, abs_tol=_VOLUME_ABS_TOL)


def expected_candle(members: Sequence[Candle], tf: str) -> Candle:
    """The `tf` candle of one period from all its (proven) 1m candles."""
    (candle,) = aggregate(members, tf, now_ms=next_open(members[0].ts, tf))
    return replace(candle, volume=round(candle.volume, VOLUME_DECIMALS), final=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What confirming [start, end) of a coarser series from its minutes comes to."""

    write: list[Candle]  # missing, not final or different: the aggregate
    empty: list[Range]  # periods without a minute: no trades
    compared: int  # periods with minutes (their candle compared)
    extra: int  # stored candles in periods without a minute (left alone, as the check does)


def decide(
    series: SeriesKey, start: int, end: int, minutes: Sequence[Candle], stored: Sequence[Candle]
) -> Verdict:
    """Compare the stored `series` candles of [start, end) with the aggregates of the proven
    1m candles (`minutes`, ascending) of the same periods."""
    tf = series.timeframe
    by_period: dict[int, list[Candle]] = {}
    for candle in minutes:
        if start <= candle.ts < end:
            by_period.setdefault(align(candle.ts, tf), []).append(candle)
    held = {c.ts: c for c in stored}
    write: list[Candle] = []
    empty: list[Range] = []
    extra = 0
    for opening in expected_opens(start, end, tf):
        members = by_period.get(opening)
        have = held.get(opening)
        if members is None:
            if have is not None:
                extra += 1
            elif empty and empty[-1][1] == opening:
                empty[-1] = (empty[-1][0], next_open(opening, tf))
            else:
                empty.append((opening, next_open(opening, tf)))
            continue
        want = expected_candle(members, tf)
        if have is None or not have.final or not same_candle(have, want):
            write.append(want)
    return Verdict(write, empty, len(by_period), extra)


@dataclass(slots=True)
class SiblingResult:
    periods: int = 0  # coarser periods confirmed
    compared: int = 0
    corrected: int = 0
    empty_periods: int = 0
    extra: int = 0


class SiblingConfirm:
    """Per 1m series the run its checks proved; confirms the coarser siblings' pending periods
    inside it (see the module). `pairs` is the check's: what is streamed (or was)."""

    def __init__(
        self,
        store: Store,
        write: WriteCandles,
        unchecked: UncheckedFinals,
        pairs: Mapping[SeriesKey, str],
    ) -> None:
        self._store = store
        self._write = write
        self._unchecked = unchecked
        self._pairs = pairs
        self._coverage: dict[SeriesKey, Coverage] = {}  # one per 1m series: O(series)

    def siblings(self, source: SeriesKey) -> list[SeriesKey]:
        """The coarser series a 1m series can confirm."""
        if source.timeframe != SOURCE_TF:
            return []
        keys = (SeriesKey(source.symbol, tf) for tf in COARSE_TIMEFRAMES)
        return [key for key in keys if key in self._pairs]

    def watch_from(self, source: SeriesKey, now_ms: int) -> int | None:
        """Where a 1m series' watch starts so that it covers its siblings' first periods (each
        watched from the period before its running one), or None: no sibling."""
        return min(
            (previous_open(align(now_ms, k.timeframe), k.timeframe) for k in self.siblings(source)),
            default=None,
        )

    def forget(self, source: SeriesKey) -> None:
        """No longer streamed: its siblings keep their own checks from now on."""
        self._coverage.pop(source, None)

    def waits(self, series: SeriesKey) -> bool:
        """Whether the series' own check is left to its 1m sibling (see the module)."""
        source = sibling_of(series)
        if source is None or source not in self._pairs or not self._unchecked.is_watched(source):
            return False
        pending = self._unchecked.waiting(series)
        if pending is None:
            return False
        cov = self._coverage.get(source)
        return waits(pending.oldest, series.timeframe, cov, self._unchecked.oldest(source))

    async def confirmed(
        self, source: SeriesKey, start: int, end: int, stalled: int | None
    ) -> SiblingResult:
        """A check of the 1m series `source` proved [start, end) (and stalled at `stalled`):
        confirm the siblings' pending periods the run now holds. Raises what the store and
        `write` raise; what was settled before stays settled."""
        cov = extend(self._coverage.get(source), start, end, stalled)
        self._coverage[source] = cov
        result = SiblingResult()
        for series in self.siblings(source):
            await self._confirm(series, source, cov, result)
        return result

    async def _confirm(
        self, series: SeriesKey, source: SeriesKey, cov: Coverage, result: SiblingResult
    ) -> None:
        tf = series.timeframe
        per_read = max(1, READ_MINUTES // (duration_ms(tf) // MINUTE_MS))
        # Each round settles what it compared, so the pending span shrinks: bounded by the run.
        while (pending := self._unchecked.waiting(series)) is not None:
            periods = whole_periods(cov, pending.oldest, pending.newest, tf)
            if periods is None:
                return
            start, end = periods[0], min(periods[1], periods[0] + per_read * duration_ms(tf))
            minutes = await self._store.candles_in_range(source, start, end, limit=READ_MINUTES)
            stored = await self._store.candles_in_range(series, start, end, limit=per_read + 1)
            verdict = decide(series, start, end, minutes, stored)
            if verdict.write:
                await self._write(verdict.write)
            if verdict.empty:
                await self._store.add_empty_ranges(series, verdict.empty)
            self._unchecked.confirm_through(series, previous_open(end, tf))
            result.periods += (end - start) // duration_ms(tf)
            result.compared += verdict.compared
            result.corrected += len(verdict.write)
            result.empty_periods += sum((b - a) // duration_ms(tf) for a, b in verdict.empty)
            result.extra += verdict.extra
            if verdict.write:
                log.info(
                    "Confirmed %s from %s: wrote %d of %d candles",
                    series,
                    source,
                    len(verdict.write),
                    verdict.compared,
                )
