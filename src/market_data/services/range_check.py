"""Check a range of one series against one REST page, and correct what differs.

    series + [start, end]  ->  one request (a page of up to `limits.page_size`, newest first)
                           ->  compare with the stored candles  ->  rewrite the differences

One page covers a whole range of a series (a week of 1m candles: Bitfinex pages hold 10,000),
so checking many closed periods costs one request, not one per candle. A stored candle is
corrected when it is missing, not final, or its values differ from the exchange's; the rewrite
goes through the caller's `write` (by default the sink, the one write path). A stored candle the
page does not have is counted (`extra`) and left alone: only the gap and empty-range machinery
decides about those. The exchange is reached through its interface (`exchanges.base`).

What a page does not prove stays unproven: rows the parser refused (quarantined through the
sink) prove nothing for their periods, and a full page (newest first) proves nothing before its
oldest row. `RangeCheckResult.unproven` is the part of the range to check again; everything else
in [start, end] is verified.

With `record_empty`, the periods of the range the page proves had no trades are recorded empty
(after the corrections are written), under `ranges.proven_empty`'s rules: the newest ended
period is left out and a page with refused rows proves nothing. `RangeCheckResult.unconfirmed`
then spans the periods neither a row nor such a proof covers (still to confirm).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from market_data.exchanges.base import CandlePage, Exchange
from market_data.models import Candle, SeriesKey
from market_data.ranges import proven_empty, subtract
from market_data.rate_limiter import Priority
from market_data.services.sink import CandleSink
from market_data.storage.base import Store
from market_data.timeframes import align, duration_ms, is_fixed, next_open, previous_open

WriteCandles = Callable[[Sequence[Candle]], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class RangeCheckResult:
    """What one page proved about [start_ms, end_ms] (open times, both inclusive)."""

    series: SeriesKey
    start_ms: int
    end_ms: int
    compared: int  # closed candles on the page within the range
    corrected: int  # stored candles missing, not final or different: rewritten
    extra: int  # stored candles the page does not have (left alone)
    unproven: tuple[int, int] | None  # open times still to check, or None: all verified
    # Open times neither a row nor a recorded empty proof covers (only with `record_empty`).
    unconfirmed: tuple[int, int] | None = None
    empty_periods: int = 0  # periods recorded empty


class RangeChecker:
    """Checks ranges of closed candles. `source` names the corrections in the sink's counts;
    `write` replaces the sink as the way corrections are stored (the WebSocket writer's
    queue, so its view of finality stays whole); `record_empty` records the no-trade periods
    a page proves."""

    def __init__(
        self,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        source: str,
        priority: Priority = Priority.NORMAL,
        write: WriteCandles | None = None,
        record_empty: bool = False,
    ) -> None:
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._source = source
        self._priority = priority
        self._write: WriteCandles = write or self._write_to_sink
        self._record_empty = record_empty

    async def check(
        self, series: SeriesKey, pair: str, start_ms: int, end_ms: int, *, closed_before_ms: int
    ) -> RangeCheckResult:
        """Check the candles of `series` (exchange id `pair`) opened within [start, end].

        Only candles whose period ended at or before `closed_before_ms` are compared: a
        running period is the stream's. Raises what `Exchange.fetch_candles` and the store
        raise; nothing is written then.
        """
        tf = series.timeframe
        page_size = self._exchange.limits.page_size
        page = await self._exchange.fetch_candles(
            pair,
            tf,
            start_ms,
            end_ms,
            limit=page_size,
            sort=-1,
            priority=self._priority,
            now_ms=closed_before_ms,
        )
        if page.rejected_count:
            await self._sink.refuse(series, page.rejected, self._source, page.rejected_count)
        unproven = _unproven(page, page_size, series, start_ms, end_ms)
        fetched = [
            c
            for c in page.candles
            if start_ms <= c.ts <= end_ms and next_open(c.ts, tf) <= closed_before_ms
        ]
        # A full page is the newest rows: it says nothing before its oldest row.
        read_from = start_ms
        if page.raw_count >= page_size and page.min_ts is not None:
            read_from = max(start_ms, page.min_ts)
        stored = {
            c.ts: c
            for c in await self._store.candles_in_range(
                series, read_from, end_ms + 1, limit=2 * page_size
            )
        }
        corrections: list[Candle] = []
        for candle in fetched:
            held = stored.pop(candle.ts, None)
            if held is None or not held.final or not held.same_values(candle):
                corrections.append(candle if candle.final else replace(candle, final=True))
        extra = sum(
            1
            for ts in stored
            if next_open(ts, tf) <= closed_before_ms
            and (unproven is None or not unproven[0] <= ts <= unproven[1])
        )
        if corrections:
            await self._write(corrections)
        result = RangeCheckResult(
            series, start_ms, end_ms, len(fetched), len(corrections), extra, unproven
        )
        if self._record_empty:
            result = await self._confirm(series, page, page_size, result, closed_before_ms)
        return result

    async def _confirm(
        self,
        series: SeriesKey,
        page: CandlePage,
        page_size: int,
        result: RangeCheckResult,
        closed_before_ms: int,
    ) -> RangeCheckResult:
        """Record the no-trade periods the page proves within the range (after its rows are
        written: a range is never recorded empty ahead of the rows around it)."""
        tf = series.timeframe
        start, end = result.start_ms, next_open(result.end_ms, tf)
        stamps = [c.ts for c in page.candles if c.ts < end]
        full = page.raw_count >= page_size
        empty = proven_empty(
            stamps,
            None if full else start,
            end,
            closed_before_ms,
            tf,
            refused=page.rejected_count,
        )
        empty = [(max(a, start), b) for a, b in empty if b > start]
        if empty:
            await self._store.add_empty_ranges(series, empty)
        rows = [(ts, next_open(ts, tf)) for ts in stamps if ts >= start]
        left = subtract([(start, end)], [*empty, *rows])
        unconfirmed = (left[0][0], previous_open(left[-1][1], tf)) if left else None
        periods = sum(_periods(a, b, tf) for a, b in empty)
        return replace(result, unconfirmed=unconfirmed, empty_periods=periods)

    async def _write_to_sink(self, candles: Sequence[Candle]) -> None:
        await self._sink.write(candles, self._source)


def _unproven(
    page: CandlePage, page_size: int, series: SeriesKey, start_ms: int, end_ms: int
) -> tuple[int, int] | None:
    """The span of [start, end] this page (of at most `page_size` rows) leaves unverified, or
    None."""
    low: int | None = None
    high: int | None = None
    if page.raw_count >= page_size and page.min_ts is not None and page.min_ts > start_ms:
        # Truncated: rows older than the page's oldest may exist and were not sent.
        low, high = start_ms, page.min_ts - 1
    if page.rejected_count:
        times = _refused_times(page)
        if (
            len(page.rejected) < page.rejected_count
            or len(times) < len(page.rejected)
            or min(times) < start_ms
            or max(times) >= next_open(end_ms, series.timeframe)
        ):
            # A refused row that is not listed, has no time or a time outside what was asked
            # for could stand for any period of the range: nothing is proven.
            return start_ms, end_ms
        first, last = align(min(times), series.timeframe), align(max(times), series.timeframe)
        low = first if low is None else min(low, first)
        high = last if high is None else max(high, last)
    if low is None or high is None:
        return None
    return low, high


def _periods(start: int, end: int, tf: str) -> int:
    if is_fixed(tf):
        return (end - start) // duration_ms(tf)
    count, ts = 0, start
    while ts < end and count < 100_000:  # bounded: a range is at most a page of periods
        count, ts = count + 1, next_open(ts, tf)
    return count


def _refused_times(page: CandlePage) -> list[int]:
    return [r.ts for r in page.rejected if r.ts is not None]
