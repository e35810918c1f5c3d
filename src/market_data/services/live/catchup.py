"""REST catch-up for the WebSocket stream: what a channel missed while it was away.

- The first time a series is subscribed in this process: the last WS_CATCHUP_LOOKBACK_MINUTES
  (none for the series the startup backfill covers: it walks the same recent window first).
- After a reconnect or a maintenance resubscribe (URGENT): from the series' last final stored
  candle (or the last caught-up one, whichever is older) to now.

What the stream got wrong while connected (a lost last update) is `final_check.py`'s.

Each fetch is a `ws_catchup` job. Only closed candles (period ended plus a grace) are taken: the
open one is the stream's. They go through the writer's queue, so the writer's view of finality
stays whole, and the job is finished once the writer has committed them. The closed periods a
page answered for without a candle had no trades: they are recorded empty once its candles are
committed (`ranges.proven_empty`; a page with a refused row proves nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from market_data.errors import (
    ExchangeRequestError,
    ExchangeUnavailable,
    PayloadError,
    RateLimited,
    StorageUnavailable,
    UnknownSymbol,
)
from market_data.exchanges.base import CandlePage, Exchange
from market_data.lifecycle import (
    SYSTEM_CLOCK,
    Backoff,
    Clock,
    JobRecord,
    recorded_job,
    until_stopped,
)
from market_data.models import JobType, SeriesKey
from market_data.ranges import proven_empty
from market_data.rate_limiter import Priority
from market_data.services.live.writer import CatchupBatch
from market_data.services.sink import CandleSink
from market_data.storage.base import Store
from market_data.timeframes import DAY_MS, MINUTE_MS, align, ceil_open, next_open, nominal_ms

# Loggers keep the names they had before services/live/: JSON log lines carry them.
log = logging.getLogger("market_data.services.ws_catchup")


@dataclass(slots=True)
class CatchupStats:
    runs: int = 0
    failures: int = 0
    candles: int = 0
    queued: int = 0  # series waiting for a catch-up
    last_run_ms: int | None = None


class CatchUp:
    def __init__(
        self,
        store: Store,
        exchange: Exchange,
        pairs: dict[SeriesKey, str],
        enqueue: Callable[[CatchupBatch], Coroutine[Any, Any, None]],
        *,
        sink: CandleSink,
        lookback_minutes: float,
        grace_ms: int,
        clock_ms: Callable[[], int],
        clock: Clock = SYSTEM_CLOCK,
        retry_initial: float = 2.0,
        retry_max: float = 60.0,
        left_to_backfill: frozenset[SeriesKey] = frozenset(),
    ) -> None:
        self._retry_initial, self._retry_max = retry_initial, retry_max
        # Series whose first subscription needs no catch-up: the startup backfill, which walks
        # the recent day first, fetches the same window (one request per series saved).
        self._left_to_backfill = set(left_to_backfill)
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._pairs = pairs
        self._enqueue = enqueue
        self._lookback_ms = int(lookback_minutes * MINUTE_MS)
        # Never reach back further than this; older holes are the gap repairer's.
        self._max_window_ms = max(self._lookback_ms, DAY_MS)
        self._grace_ms = grace_ms
        self._clock_ms = clock_ms
        self._clock = clock  # monotonic deadlines (retries) and waits
        self._wanted: dict[SeriesKey, tuple[float, Priority]] = {}  # -> (not before, priority)
        self._backoff: dict[SeriesKey, Backoff] = {}
        self._verified: dict[SeriesKey, int] = {}  # candles ending at or before are checked
        self._wake = asyncio.Event()
        self.stats = CatchupStats()

    def request(self, _shard_id: int, series: list[SeriesKey]) -> None:
        """A shard (re)subscribed these series: fetch what they may have missed, urgently."""
        for key in series:
            if key in self._left_to_backfill and key not in self._verified:
                self._left_to_backfill.discard(key)
                self._verified[key] = self._clock_ms() - self._grace_ms
                continue
            if key in self._pairs:
                self._wanted[key] = (0.0, Priority.URGENT)
        self.stats.queued = len(self._wanted)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._clock.monotonic()
            due = sorted(
                (key for key, (at, _) in self._wanted.items() if at <= now),
                key=lambda k: self._wanted[k][1],
            )
            if not due:
                self._wake.clear()
                wake_at = min((at for at, _ in self._wanted.values()), default=now + 3600.0)
                await until_stopped(stop, self._wait_wake(wake_at - now))
                continue
            for key in due:
                if stop.is_set():
                    return
                await self._one(key, stop)

    async def _one(self, series: SeriesKey, stop: asyncio.Event) -> None:
        _, priority = self._wanted.pop(series, (0.0, Priority.NORMAL))
        now_ms = self._clock_ms()
        try:
            start_ms = await self._window_start(series, now_ms)
            async with recorded_job(
                self._store,
                JobType.WS_CATCHUP,
                series.symbol,
                series.timeframe,
                logger=log,
                label="catch-up job",
            ) as job:
                fetched = await self._run(job, series, start_ms, now_ms, priority, stop)
        except StorageUnavailable as exc:
            if series not in self._wanted:  # not already rescheduled by the failed window
                self._retry(series, priority, exc)
            return
        if fetched is None:
            return
        self._verified[series] = max(self._verified.get(series, 0), now_ms - self._grace_ms)
        self._backoff.pop(series, None)
        self.stats.runs += 1
        self.stats.candles += fetched
        self.stats.last_run_ms = self._clock.now_ms()
        self.stats.queued = len(self._wanted)
        log.debug("Catch-up for %s: %d candles from %d", series, fetched, start_ms)

    async def _run(
        self,
        job: JobRecord,
        series: SeriesKey,
        start_ms: int,
        now_ms: int,
        priority: Priority,
        stop: asyncio.Event,
    ) -> int | None:
        """Fetch one window for a recorded job: the candles fetched once verified, or None
        when the window was not verified (the job says why; a retry is scheduled if useful)."""
        counted: list[int] = []
        refused: list[int] = []

        async def fetch() -> None:
            counted.append(await self._fetch(series, start_ms, now_ms, priority, stop, refused))

        try:
            await until_stopped(stop, fetch())
        except (ExchangeUnavailable, RateLimited, StorageUnavailable) as exc:
            job.fail(str(exc))
            self._retry(series, priority, exc)
            return None
        except (ExchangeRequestError, UnknownSymbol) as exc:
            job.fail(str(exc))
            self.stats.failures += 1
            log.error("Catch-up for %s refused by the exchange: %s", series, exc)
            return None
        job.candles = fetched = counted[0] if counted else 0
        if stop.is_set():
            job.cancel("stopping")
            return None
        if refused:
            # Invalid rows (quarantined) stood for candles this window did not verify.
            job.fail(f"{sum(refused)} rows refused")
            self._retry(series, priority, PayloadError(f"{sum(refused)} invalid rows refused"))
            return None
        return fetched

    async def _window_start(self, series: SeriesKey, now_ms: int) -> int:
        floor = max(0, now_ms - self._max_window_ms)
        verified = self._verified.get(series)
        if verified is None:
            return max(0, now_ms - self._lookback_ms)
        start = verified - nominal_ms(series.timeframe)
        last = await self._store.last_candle(series, final_only=True)
        if last is not None:
            start = min(start, last.ts)
        return max(floor, start)

    async def _fetch(
        self,
        series: SeriesKey,
        start_ms: int,
        end_ms: int,
        priority: Priority,
        stop: asyncio.Event,
        refused: list[int],
    ) -> int:
        """Fetch [start, end] page by page; return the candles received. Rows the parser
        refused are quarantined and their counts appended to `refused`."""
        pair = self._pairs[series]
        fetched = 0
        closed_before = end_ms - self._grace_ms
        page_size = self._exchange.limits.page_size
        max_pages = 2 + (end_ms - start_ms) // (page_size * nominal_ms(series.timeframe))
        for _ in range(max_pages):
            page = await self._exchange.fetch_candles(
                pair,
                series.timeframe,
                start_ms,
                end_ms,
                limit=page_size,
                sort=1,
                priority=priority,
                now_ms=end_ms,
            )
            fetched += len(page.candles)
            if page.rejected_count:
                refused.append(page.rejected_count)
                await self._sink.refuse(series, page.rejected, "ws_catchup", page.rejected_count)
            closed = tuple(c for c in page.candles if next_open(c.ts, c.timeframe) <= closed_before)
            if closed:
                batch = CatchupBatch(closed, asyncio.get_running_loop().create_future())
                if not await until_stopped(stop, self._enqueue(batch)):
                    return fetched
                if not await until_stopped(stop, _wait_future(batch.done)):
                    return fetched
            full = page.raw_count >= page_size and page.max_ts is not None
            await self._record_empty(series, page, start_ms, end_ms, closed_before, full)
            if not full or page.max_ts is None:
                break
            start_ms = next_open(page.max_ts, series.timeframe)
            if start_ms > end_ms:
                break
        return fetched

    async def _record_empty(
        self,
        series: SeriesKey,
        page: CandlePage,
        start_ms: int,
        end_ms: int,
        closed_before: int,
        full: bool,
    ) -> None:
        """Record the periods the page answered for without a candle (no trades), once its
        candles are committed. Only closed periods count, as for the candles it takes; a full
        page reaches no further than its newest row."""
        tf = series.timeframe
        covered_end = next_open(page.max_ts, tf) if full and page.max_ts is not None else end_ms
        ranges = proven_empty(
            [c.ts for c in page.candles],
            ceil_open(start_ms, tf),  # the period holding an unaligned start was not asked for
            min(covered_end, align(closed_before, tf)),
            end_ms,
            tf,
            refused=page.rejected_count,
        )
        if ranges:
            await self._store.add_empty_ranges(series, ranges)

    async def _wait_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await self._clock.wait(self._wake.wait(), seconds)

    def _retry(self, series: SeriesKey, priority: Priority, exc: Exception) -> None:
        backoff = self._backoff.setdefault(series, Backoff(self._retry_initial, self._retry_max))
        delay = backoff.next()
        self.stats.failures += 1
        self._wanted[series] = (self._clock.monotonic() + delay, priority)
        self.stats.queued = len(self._wanted)
        log.warning("Catch-up for %s failed (%s); retrying in %.0f s", series, exc, delay)


async def _wait_future(future: asyncio.Future[None]) -> None:
    await asyncio.shield(future)
