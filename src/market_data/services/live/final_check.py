"""Check what the WebSocket stream saw against REST, a whole range per request.

A stream can lose a candle's last update without any visible sign (Bitfinex re-sends a closed
candle only sometimes), and the writer then finalizes the candle with stale values; it can also
lose every update of a period, which then looks like a period without trades. So every candle
the writer commits as final from the stream, and every period of a watched series that closed
without one, is pending here (`pending.py`), and checked:

- Pending work is bounded: per series one span [oldest, newest] of open times, not a list of
  candles. A check takes the whole span (up to a page, 10,000 periods), so one request (newest
  first: recent periods first) covers every period that closed since the last.
- A series with stream finals is due once its oldest final closed `batch_age_ms` ago (on the
  ingestion clock), so a request covers several periods; one with only no-trade periods about
  once an hour (`DueRules`). The most overdue series goes first.
- Requests go through the exchange's rate limiter at NORMAL priority (catch-up, URGENT, goes first;
  backfill, BULK, cannot starve the check), and the check starts at most one every
  `spacing_s`, which keeps its share of the REST budget bounded (the rest stays for backfill,
  gap repair and updates even while the check is busy).
- A difference or a candle the stream missed is written (through the writer, then the sink) and
  counted; the no-trade periods a page proves are recorded empty (gap detection stops before
  the pending ones); what a page did not prove (refused rows, a truncated page, the newest
  ended period when it has no row) stays pending and is asked again.

A coarser series streamed with its 1m sibling (1h and 1m of one pair) asks nothing itself: the
1m check proves every minute, and the coarser periods inside what it proved are confirmed from
them (`sibling.py`), so a pair costs one request an hour, not one per series.

`oldest_age_ms()` is how long the oldest unchecked stream final has been closed: the longest a
wrong final candle can have been visible. It is exported in /metrics, with the periods pending.

Finals noted before a restart are not carried over: the start-up catch-up re-reads the last
WS_CATCHUP_LOOKBACK_MINUTES from REST anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from market_data.errors import MarketDataError
from market_data.lifecycle import SYSTEM_CLOCK, Backoff, Clock, until_stopped
from market_data.models import SeriesKey
from market_data.services.live.pending import HOUR_MS, DueRules, Pending, UncheckedFinals
from market_data.services.live.sibling import SiblingConfirm, SiblingResult
from market_data.services.range_check import RangeChecker, RangeCheckResult
from market_data.timeframes import align, next_open, now_ms, previous_open

__all__ = ["FinalCheck", "FinalCheckStats", "UncheckedFinals"]

# Loggers keep the names they had before services/live/: JSON log lines carry them.
log = logging.getLogger("market_data.services.ws_final_check")


@dataclass(slots=True)
class FinalCheckStats:
    """Read by /status and the metrics collector at scrape time."""

    checks: int = 0  # REST pages asked for
    candles_checked: int = 0  # closed candles compared
    corrections: int = 0  # stored candles rewritten because they differed
    extra: int = 0  # stored candles the exchange did not have (left alone)
    unproven: int = 0  # checks that left part of their span unproven (refused rows, full page)
    failures: int = 0
    confirmations: int = 0  # checks of series with only no-trade periods pending
    empty_periods: int = 0  # periods the checks recorded empty (no trades)
    sibling_periods: int = 0  # coarser periods confirmed from their 1m sibling's check
    pending_periods: int = 0  # closed periods waiting for the check (updated each loop)
    watched_series: int = 0
    last_check_ms: int | None = None


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
        confirm_age_ms: int = 57 * 60_000,
        confirm_interval_ms: int = HOUR_MS,
        max_periods: int = 10_000,
        clock_ms: Callable[[], int] = now_ms,
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 0.5,
        retry_initial: float = 2.0,
        retry_max: float = 60.0,
        sibling: SiblingConfirm | None = None,
    ) -> None:
        self._checker = checker
        self._sibling = sibling
        self._pairs = pairs
        self.unchecked = unchecked
        self.rules = DueRules(batch_age_ms, grace_ms, confirm_age_ms, confirm_interval_ms)
        self._max_periods = max_periods  # one page: what one request can confirm
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
        """How long the oldest unchecked stream final has been closed (0: none unchecked)."""
        closed = self.unchecked.oldest_close_ms()
        return 0 if closed is None else max(0, self._clock_ms() - closed)

    def watch(self, series: list[SeriesKey]) -> None:
        """These series' channels are ready: their periods from now on are pending."""
        now = self._clock_ms()
        for key in series:
            if key in self._pairs:
                start = self._sibling.watch_from(key, now) if self._sibling else None
                self.unchecked.watch(key, now, start)
        self.stats.watched_series = self.unchecked.watched

    def unwatch(self, series: list[SeriesKey]) -> None:
        """No longer streamed: what is pending is still checked, nothing new joins."""
        for key in series:
            self.unchecked.unwatch(key)
            if self._sibling is not None:
                self._sibling.forget(key)
        self.stats.watched_series = self.unchecked.watched

    async def run(self, stop: asyncio.Event) -> None:
        next_start = 0.0
        while not stop.is_set():
            now = self._clock.monotonic()
            # Periods of watched series join their spans as they close, with or without a frame.
            self.unchecked.advance(self._clock_ms() - self._grace_ms)
            self.stats.pending_periods = self.unchecked.periods()
            if now < next_start:
                await until_stopped(stop, self._clock.sleep(min(self._tick_s, next_start - now)))
                continue
            retrying = {s for s, (until, _) in self._retry.items() if until > now}
            skip = functools.partial(self._skipped, retrying)
            series = self.unchecked.most_overdue(self._clock_ms(), self.rules, skip)
            if series is None:
                # Ages are on the ingestion clock, which may run faster than real time (the
                # simulator's), so wait at most a tick and look again.
                due = self.unchecked.next_due_ms(self.rules, skip)
                wait = self._tick_s
                if due is not None:
                    wait = min(wait, (due - self._clock_ms()) / 1000)
                await until_stopped(stop, self._clock.sleep(max(0.01, wait)))
                continue
            next_start = now + self._spacing_s
            await self._check(series, stop)

    def _skipped(self, retrying: set[SeriesKey], series: SeriesKey) -> bool:
        """Not checked now: retrying later, or left to its 1m sibling's check."""
        return series in retrying or (self._sibling is not None and self._sibling.waits(series))

    async def _check(self, series: SeriesKey, stop: asyncio.Event) -> None:
        pending = self.unchecked.take(series, self._max_periods, self._clock_ms())
        if pending is None:
            return
        span = pending.span
        # Only periods that ended before `closed_before` are compared (a candle finalized at
        # its rollover can be younger than the grace): the span's newer part waits for a later
        # check instead of being taken as checked.
        closed_before = self._clock_ms() - self._grace_ms
        tf = series.timeframe
        check_end = min(span[1], previous_open(align(closed_before, tf), tf))
        if check_end < span[0]:
            self.unchecked.settle(series, pending)
            return
        later = pending.left((next_open(check_end, tf), span[1])) if check_end < span[1] else None
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
            self.unchecked.settle(series, pending)
            self._failed(series, exc)
            return
        if not done:  # stopping
            self.unchecked.settle(series, pending)
            return
        result = done[0]
        left = _left(pending, result)
        self.unchecked.settle(series, left)
        if later is not None:
            self.unchecked.settle(series, later)
        sibling = self._sibling
        if sibling is not None and sibling.siblings(series):
            # What the check proved: the span up to what it left (or up to its end).
            proved_to = left.oldest if left is not None else next_open(check_end, tf)
            stalled = result.unproven[0] if result.unproven is not None else None
            if result.extra:  # a stored minute the exchange lacks would skew an aggregate
                proved_to = stalled = span[0]
            await self._confirm_siblings(sibling, series, (span[0], proved_to), stalled, stop)
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
        stats.confirmations += pending.final is None
        stats.empty_periods += result.empty_periods
        stats.last_check_ms = self._clock.now_ms()
        if result.corrected:
            log.info(
                "Checked %s against REST: corrected %d of %d final candles",
                series,
                result.corrected,
                result.compared,
            )

    async def _confirm_siblings(
        self,
        sibling: SiblingConfirm,
        series: SeriesKey,
        proved: tuple[int, int],
        stalled: int | None,
        stop: asyncio.Event,
    ) -> None:
        """The 1m check of `series` proved [start, end) of it: confirm its coarser siblings."""
        done: list[SiblingResult] = []

        async def confirm() -> None:
            done.append(await sibling.confirmed(series, proved[0], proved[1], stalled))

        try:
            await until_stopped(stop, confirm())
        except MarketDataError as exc:  # the store: the periods stay pending, tried next time
            self.stats.failures += 1
            log.warning("Confirming the siblings of %s failed (%s)", series, exc)
            return
        if done:
            stats, got = self.stats, done[0]
            stats.sibling_periods += got.periods
            stats.candles_checked += got.compared
            stats.corrections += got.corrected
            stats.extra += got.extra
            stats.empty_periods += got.empty_periods

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


def _left(pending: Pending, result: RangeCheckResult) -> Pending | None:
    """What a check left of the span it took: the values it did not prove (refused rows, a
    truncated page) and the periods neither a row nor an empty proof covers."""
    parts = [p for p in (result.unproven, result.unconfirmed) if p is not None]
    if not parts:
        return None
    left = pending.left((min(p[0] for p in parts), max(p[1] for p in parts)))
    if result.unproven is None:
        left.final = None  # every stream final was compared
    return left
