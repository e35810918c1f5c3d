"""Paged, resumable history: walks each native series forward with the fewest requests Bitfinex
allows, then rebuilds the derived series (4h from 1h) over the range.

Per series the range is [start, end) with start = now - BACKFILL_DAYS aligned (never older than
the timeframe's retention or the store's retention horizon). What is already known is not fetched
again: the span from the first stored candle to the last stored *final* one, and every range the
exchange already answered empty (recorded in the store). Each remaining window is walked with
`sort=1`, explicit `start`/`end` and `limit=10000`; the next page starts one period after the last
row returned, and a short page ends the window. While one page is written the next is already
being fetched (one page ahead, no more), so the database and the exchange work at the same time.

When a walk's first row is later than the window start, the exchange has said nothing traded
before it: [window start, first row) is recorded empty. That is how a recently listed pair stops
at its first candle and why a rerun does not walk the pre-listing range again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from market_data.config import Settings
from market_data.errors import MarketDataError, UnknownSymbol, is_exchange_outage
from market_data.exchanges.base import CandlePage, Exchange
from market_data.lifecycle import JobRecord, describe, recorded_job
from market_data.models import JobStatus, JobType, SeriesKey
from market_data.ranges import proven_empty, subtract
from market_data.rate_limiter import Priority
from market_data.services.backfill_report import (
    BackfillReport,
    SeriesProgress,
    SeriesResult,
    order_series,
)
from market_data.services.sink import CandleSink
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import (
    DAY_MS,
    align,
    ceil_open,
    format_log_ts,
    next_open,
    now_ms,
    source_of,
)

log = logging.getLogger(__name__)

SOURCE = "backfill"

# The seed's module is the backfill's public face; its report types live beside it.
__all__ = ["BackfillReport", "BackfillService", "SeriesProgress", "SeriesResult", "order_series"]


class BackfillService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        clock: Callable[[], int] | None = None,
        universe: SeriesUniverse | None = None,
    ) -> None:
        self._settings = settings
        self._universe = universe or SeriesUniverse.static(settings)
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._clock = clock or now_ms
        self.progress: dict[SeriesKey, SeriesProgress] = {}
        self._limited_seen = 0
        self._runs = 0  # runs going on now (a newly listed pair's may run beside another)

    async def run(
        self,
        series: Sequence[SeriesKey] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> BackfillReport:
        """Backfill `series` (default: every active one) over [start_ms, end_ms)."""
        self._runs += 1
        try:
            return await self._run(series, start_ms, end_ms, stop)
        finally:
            self._runs -= 1

    async def _run(
        self,
        series: Sequence[SeriesKey] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> BackfillReport:
        stop = stop or asyncio.Event()
        wanted = list(series) if series is not None else self._universe.all_series()
        natives, derived = order_series(wanted)
        # In run order: each source, then the series derived from it.
        ordered = [k2 for k in natives for k2 in [k, *self._derived_of(k, derived)]]
        fresh = {k: SeriesProgress(k.symbol, k.timeframe) for k in ordered + derived}
        # A run still going keeps its series in view (and in reach of its own lookups).
        self.progress = {**self.progress, **fresh} if self._runs > 1 else fresh
        report = BackfillReport()
        now = self._clock()
        end = now if end_ms is None else min(end_ms, now)
        days_ms = round(self._settings.backfill_days * DAY_MS)
        for key in natives:
            if stop.is_set():
                report.cancelled = True
                self.progress[key].state = JobStatus.CANCELLED
                continue
            base = start_ms if start_ms is not None else now - days_ms
            # A source starts at its derived series' period start: no partial first 4h candle.
            start = min(
                [align(base, key.timeframe)]
                + [align(base, d.timeframe) for d in self._derived_of(key, derived)]
            )
            result = await self._run_native(key, start, end, now, stop)
            report.results.append(result)
            if result.status == "skipped" and key.symbol not in report.unknown_symbols:
                report.unknown_symbols.append(key.symbol)
            report.cancelled = report.cancelled or result.status == JobStatus.CANCELLED
            # Rebuilt right after the source, even when it stopped early: what landed is
            # aggregated now, the rest on the next run.
            for dkey in self._derived_of(key, derived):
                if result.status == "skipped":
                    self.progress[dkey].state = "skipped"
                    continue
                report.results.append(
                    await self._run_derived(dkey, align(base, dkey.timeframe), end, now)
                )
        for key in derived:
            if self.progress[key].state == "pending":
                self.progress[key].state = JobStatus.CANCELLED
        log.info(
            "Backfill %s: %d candles in %d requests, %d series failed",
            "cancelled" if report.cancelled else "complete",
            report.candles,
            report.requests,
            len(report.failed),
        )
        return report

    @staticmethod
    def _derived_of(source: SeriesKey, derived: Sequence[SeriesKey]) -> list[SeriesKey]:
        return [
            d
            for d in derived
            if d.symbol == source.symbol and source_of(d.timeframe) == source.timeframe
        ]

    async def _lower_bound(self, key: SeriesKey, start: int, now: int) -> int:
        lower = start
        retention = self._settings.retention_ms(key.timeframe)
        if retention is not None:
            lower = max(lower, now - retention)
        horizon = await self._store.get_retention_horizon(key)
        if horizon is not None:
            lower = max(lower, horizon)
        return ceil_open(lower, key.timeframe)

    async def plan(self, key: SeriesKey, start: int, end: int, now: int) -> list[tuple[int, int]]:
        """The windows still to fetch for `key` in [start, end)."""
        lower = await self._lower_bound(key, start, now)
        if lower >= end:
            return []
        windows = [(lower, end)]
        first = await self._store.first_candle(key)
        if first is not None:
            last_final = await self._store.last_candle(key, final_only=True)
            known_end = next_open(last_final.ts, key.timeframe) if last_final else first.ts
            windows = subtract(windows, [(first.ts, known_end)])
        if windows:
            windows = subtract(windows, await self._store.empty_ranges(key, lower, end))
        return windows

    async def _run_native(
        self, key: SeriesKey, start: int, end: int, now: int, stop: asyncio.Event
    ) -> SeriesResult:
        prog = self.progress[key]
        prog.state, prog.started = JobStatus.RUNNING, time.monotonic()
        prog.exchange_outage = False
        self._limited_seen = self._exchange.limiter.stats.rate_limited
        try:
            async with recorded_job(
                self._store, JobType.BACKFILL, key.symbol, key.timeframe, logger=log
            ) as job:
                await self._fetch_series(job, key, start, end, now, stop)
        except asyncio.CancelledError:
            prog.state, prog.finished = JobStatus.CANCELLED, time.monotonic()
            raise
        prog.finished = time.monotonic()
        if prog.state != "skipped":
            prog.state = str(job.status)
        prog.error = job.error
        return SeriesResult(
            key.symbol,
            key.timeframe,
            prog.state,
            prog.candles,
            prog.requests,
            prog.rejected,
            job.error,
            prog.exchange_outage,
        )

    async def _fetch_series(
        self,
        job: JobRecord,
        key: SeriesKey,
        start: int,
        end: int,
        now: int,
        stop: asyncio.Event,
    ) -> None:
        """Walk every window still to fetch; the outcome goes on the job."""
        prog = self.progress[key]
        try:
            pair = await self._exchange.pair_for(key.symbol)
            windows = await self.plan(key, start, end, now)
            prog.total_ms = sum(b - a for a, b in windows)
            for window in windows:
                if stop.is_set() or not await self._walk(key, pair, window, now, job, stop):
                    job.cancel()
                    break
        except UnknownSymbol as exc:
            log.error("Backfill %s skipped: the exchange does not list %s", key, key.symbol)
            job.fail(f"unknown symbol: {exc}")
            prog.state = "skipped"
        except MarketDataError as exc:
            job.fail(describe(exc))
            prog.exchange_outage = is_exchange_outage(exc)
            log.error("Backfill %s failed: %s", key, job.error)
        self._count_waits(prog)
        job.candles = prog.candles

    def _count_waits(self, prog: SeriesProgress) -> None:
        # The limiter is shared by the process: 429s while this series runs are counted for it.
        limited = self._exchange.limiter.stats.rate_limited
        prog.rate_limit_waits += limited - self._limited_seen
        self._limited_seen = limited

    async def _fetch(self, pair: str, key: SeriesKey, cursor: int, end: int) -> CandlePage:
        return await self._exchange.fetch_candles(
            pair,
            key.timeframe,
            cursor,
            end - 1,
            limit=self._exchange.limits.page_size,
            sort=1,
            priority=Priority.BULK,
        )

    async def _walk(
        self,
        key: SeriesKey,
        pair: str,
        window: tuple[int, int],
        now: int,
        job: JobRecord,
        stop: asyncio.Event,
    ) -> bool:
        """Walk one window forward; False when stopped before its end."""
        prog = self.progress[key]
        w_start, w_end = window
        cursor = w_start
        ahead: asyncio.Task[CandlePage] | None = asyncio.create_task(
            self._fetch(pair, key, cursor, w_end)
        )
        first_page = True
        try:
            while ahead is not None:
                page = await ahead
                ahead = None
                prog.requests += 1
                self._count_waits(prog)
                last_ts = page.max_ts
                more = page.raw_count >= self._exchange.limits.page_size and last_ts is not None
                next_cursor = next_open(last_ts, key.timeframe) if last_ts is not None else w_end
                more = more and next_cursor < w_end
                if more and not stop.is_set():
                    ahead = asyncio.create_task(self._fetch(pair, key, next_cursor, w_end))
                await self._write(key, page)
                walked_to = next_cursor if more else w_end
                # Only the first page records the stretch before its first row, as the backfill
                # always has (a later page's stretch, from one period after the previous page's
                # newest row, would be proven too; kept as it was).
                await self._record_empty(key, cursor if first_page else None, page, walked_to, now)
                first_page = False
                prog.done_ms += walked_to - cursor
                cursor = walked_to
                job.candles = prog.candles
                await self._store.update_job_progress(job.id, prog.candles)
                if more and stop.is_set():
                    return False
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, MarketDataError):
                    await ahead
        return True

    async def _record_empty(
        self, key: SeriesKey, head: int | None, page: CandlePage, covered_end: int, now: int
    ) -> None:
        """Periods the exchange answered for without a candle had no trades: remember them, so
        no one asks again and gap detection never mistakes them for lost data. On a walk's
        first page that includes [window start, first row): how a recently listed pair stops
        at its first candle."""
        ranges = proven_empty(
            [c.ts for c in page.candles],
            head,
            covered_end,
            now,
            key.timeframe,
            refused=page.rejected_count,
        )
        if not ranges:
            return
        await self._store.add_empty_ranges(key, ranges)
        if head is not None and ranges[0][0] == head:
            log.info("Backfill %s: no candles before %s", key, format_log_ts(ranges[0][1]))

    async def _write(self, key: SeriesKey, page: CandlePage) -> None:
        prog = self.progress[key]
        prog.fetched += page.raw_count
        if page.rejected_count:
            # Already logged by the REST client; kept in quarantine for inspection.
            prog.rejected += page.rejected_count
            await self._sink.refuse(key, page.rejected, SOURCE, page.rejected_count)
        if page.candles:
            result = await self._sink.write(page.candles, SOURCE, derive=False)
            prog.candles += result.written
            prog.rejected += len(result.rejected)

    async def _run_derived(self, key: SeriesKey, start: int, end: int, now: int) -> SeriesResult:
        prog = self.progress[key]
        prog.state, prog.started = JobStatus.RUNNING, time.monotonic()
        source = SeriesKey(key.symbol, source_of(key.timeframe))
        async with recorded_job(
            self._store, JobType.BACKFILL, key.symbol, key.timeframe, logger=log
        ) as job:
            try:
                lower = await self._lower_bound(key, start, now)
                prog.total_ms = max(0, end - lower)
                if lower < end:
                    result = await self._sink.derived.recompute(
                        source, lower, end, timeframes=[key.timeframe], now_ms=self._clock()
                    )
                    prog.candles, prog.rejected = result.written, len(result.rejected)
                prog.done_ms = prog.total_ms
            except MarketDataError as exc:
                job.fail(describe(exc))
                log.error("Backfill %s failed: %s", key, job.error)
            job.candles = prog.candles
        prog.state, prog.error, prog.finished = str(job.status), job.error, time.monotonic()
        return SeriesResult(
            key.symbol, key.timeframe, prog.state, prog.candles, 0, prog.rejected, job.error
        )
