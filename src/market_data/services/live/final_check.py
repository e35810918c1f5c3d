"""Check candles finalized from the WebSocket stream against REST, a whole range per request.

A stream can lose a candle's last update without any visible sign (Bitfinex re-sends a closed
candle only sometimes), and the writer then finalizes the candle with stale values. So every
candle the writer commits as final from the stream is noted here as unchecked, and checked:

- Pending work is bounded: per series one span [oldest, newest] of unchecked open times, not a
  list of candles. A check takes the whole span, so one request (one REST page of up to 10,000
  candles, newest first: recent periods first) covers every period that closed since the last.
- A series is due once its oldest unchecked candle closed `batch_age_ms` ago (on the ingestion
  clock), so a request covers several periods; the most overdue series goes first.
- Requests go through the exchange's rate limiter at NORMAL priority (catch-up, URGENT, goes first;
  backfill, BULK, cannot starve the check), and the check starts at most one every
  `spacing_s`, which keeps its share of the REST budget bounded (the rest stays for backfill,
  gap repair and updates even while the check is busy).
- A difference is rewritten (through the writer, then the sink) and counted; what a page did
  not prove (refused rows, a truncated page) stays unchecked and is asked again.

`oldest_age_ms()` is how long the oldest unchecked final candle has been closed: the longest a
wrong final candle can have been visible. It is exported in /metrics.

Finals noted before a restart are not carried over: the start-up catch-up re-reads the last
WS_CATCHUP_LOOKBACK_MINUTES from REST anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from market_data.errors import MarketDataError
from market_data.lifecycle import SYSTEM_CLOCK, Backoff, Clock, until_stopped
from market_data.models import SeriesKey
from market_data.services.range_check import RangeChecker, RangeCheckResult
from market_data.timeframes import align, next_open, now_ms, previous_open

# Loggers keep the names they had before services/live/: JSON log lines carry them.
log = logging.getLogger("market_data.services.ws_final_check")

Span = tuple[int, int]  # open times, both inclusive


@dataclass(slots=True)
class FinalCheckStats:
    """Read by /status and the metrics collector at scrape time."""

    checks: int = 0  # REST pages asked for
    candles_checked: int = 0  # closed candles compared
    corrections: int = 0  # stored candles rewritten because they differed
    extra: int = 0  # stored candles the exchange did not have (left alone)
    unproven: int = 0  # checks that left part of their span unproven (refused rows, full page)
    failures: int = 0
    last_check_ms: int | None = None


class UncheckedFinals:
    """Per series, the span of open times finalized from the stream and not yet checked.

    Memory is one entry per series whatever the number of candles. A span being checked is
    held apart (`take`), so finals noted meanwhile start a fresh span; `settle` merges back
    what the check did not prove.
    """

    def __init__(self) -> None:
        self._pending: dict[SeriesKey, Span] = {}
        self._checking: dict[SeriesKey, Span] = {}

    def __len__(self) -> int:
        return len(self._pending.keys() | self._checking.keys())

    def note(self, series: SeriesKey, ts: int) -> None:
        span = self._pending.get(series)
        if span is None:
            self._pending[series] = (ts, ts)
        elif ts < span[0] or ts > span[1]:
            self._pending[series] = (min(span[0], ts), max(span[1], ts))

    def take(self, series: SeriesKey) -> Span | None:
        span = self._pending.pop(series, None)
        if span is not None:
            self._checking[series] = span
        return span

    def settle(self, series: SeriesKey, unproven: Span | None) -> None:
        """The check of `series` ended; `unproven` (if any) is still to check."""
        self._checking.pop(series, None)
        if unproven is not None:
            self.note(series, unproven[0])
            self.note(series, unproven[1])

    def most_overdue(
        self, closed_by_ms: int, skip: Callable[[SeriesKey], bool] = lambda _: False
    ) -> SeriesKey | None:
        """The series whose oldest unchecked candle closed first, if that was by `closed_by_ms`."""
        best: SeriesKey | None = None
        best_end = closed_by_ms + 1
        for series, (oldest, _) in self._pending.items():
            end = next_open(oldest, series.timeframe)
            if end < best_end and not skip(series):
                best, best_end = series, end
        return best

    def next_due_ms(self) -> int | None:
        """When the oldest pending candle closed (None when nothing is pending)."""
        return min(
            (next_open(oldest, s.timeframe) for s, (oldest, _) in self._pending.items()),
            default=None,
        )

    def oldest_close_ms(self) -> int | None:
        """When the oldest unchecked candle (pending or being checked) closed."""
        ends = [
            next_open(oldest, s.timeframe)
            for spans in (self._pending, self._checking)
            for s, (oldest, _) in spans.items()
        ]
        return min(ends, default=None)


class FinalCheck:
    """The loop: picks the most overdue series, checks its span with one page, settles it."""

    def __init__(
        self,
        checker: RangeChecker,
        pairs: dict[SeriesKey, str],
        unchecked: UncheckedFinals,
        *,
        batch_age_ms: int,
        spacing_s: float,
        grace_ms: int,
        clock_ms: Callable[[], int] = now_ms,
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 0.5,
        retry_initial: float = 2.0,
        retry_max: float = 60.0,
    ) -> None:
        self._checker = checker
        self._pairs = pairs
        self.unchecked = unchecked
        self._batch_age_ms = batch_age_ms
        self._spacing_s = spacing_s
        self._grace_ms = grace_ms
        self._clock_ms = clock_ms
        self._tick_s = tick_s
        # Candle ages are on `clock_ms` (the ingestion clock); spacing, retry deadlines and
        # waits on `clock` (virtual in tests and bench/).
        self._clock = clock
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._retry: dict[SeriesKey, tuple[float, Backoff]] = {}  # -> (not before, backoff)
        self.stats = FinalCheckStats()

    def oldest_age_ms(self) -> int:
        """How long the oldest unchecked final candle has been closed (0: none unchecked)."""
        closed = self.unchecked.oldest_close_ms()
        return 0 if closed is None else max(0, self._clock_ms() - closed)

    async def run(self, stop: asyncio.Event) -> None:
        next_start = 0.0
        while not stop.is_set():
            now = self._clock.monotonic()
            if now < next_start:
                await until_stopped(stop, self._clock.sleep(next_start - now))
                continue
            retrying = {s for s, (until, _) in self._retry.items() if until > now}
            series = self.unchecked.most_overdue(
                self._clock_ms() - self._batch_age_ms, retrying.__contains__
            )
            if series is None:
                # Ages are on the ingestion clock, which may run faster than real time (the
                # simulator's), so wait at most a tick and look again.
                due = self.unchecked.next_due_ms()
                wait = self._tick_s
                if due is not None:
                    wait = min(wait, (due + self._batch_age_ms - self._clock_ms()) / 1000)
                await until_stopped(stop, self._clock.sleep(max(0.01, wait)))
                continue
            next_start = now + self._spacing_s
            await self._check(series, stop)

    async def _check(self, series: SeriesKey, stop: asyncio.Event) -> None:
        span = self.unchecked.take(series)
        if span is None:
            return
        # Only periods that ended before `closed_before` are compared (a candle finalized at
        # its rollover can be younger than the grace): the span's newer part waits for a later
        # check instead of being taken as checked.
        closed_before = self._clock_ms() - self._grace_ms
        tf = series.timeframe
        check_end = min(span[1], previous_open(align(closed_before, tf), tf))
        if check_end < span[0]:
            self.unchecked.settle(series, span)
            return
        later = (next_open(check_end, tf), span[1]) if check_end < span[1] else None
        done: list[RangeCheckResult] = []

        async def check() -> None:
            done.append(
                await self._checker.check(
                    series,
                    self._pairs[series],
                    span[0],
                    check_end,
                    closed_before_ms=closed_before,
                )
            )

        try:
            await until_stopped(stop, check())
        except MarketDataError as exc:  # the exchange, the store or the payload: try later
            self.unchecked.settle(series, span)
            self._failed(series, exc)
            return
        if not done:  # stopping
            self.unchecked.settle(series, span)
            return
        result = done[0]
        self.unchecked.settle(series, result.unproven)
        if later is not None:
            self.unchecked.settle(series, later)
        if result.unproven is None:
            self._retry.pop(series, None)
        else:
            # Refused rows may come back the same way: ask again later, not at once.
            self._defer(series)
        stats = self.stats
        stats.checks += 1
        stats.candles_checked += result.compared
        stats.corrections += result.corrected
        stats.extra += result.extra
        stats.unproven += result.unproven is not None
        stats.last_check_ms = self._clock.now_ms()
        if result.corrected:
            log.info(
                "Checked %s against REST: corrected %d of %d final candles",
                series,
                result.corrected,
                result.compared,
            )

    def _failed(self, series: SeriesKey, exc: Exception) -> None:
        delay = self._defer(series)
        self.stats.failures += 1
        log.warning("Checking %s against REST failed (%s); retrying in %.0f s", series, exc, delay)

    def _defer(self, series: SeriesKey) -> float:
        retry = self._retry.get(series)
        backoff = retry[1] if retry else Backoff(self._retry_initial, self._retry_max)
        delay = backoff.next()
        self._retry[series] = (self._clock.monotonic() + delay, backoff)
        return delay
