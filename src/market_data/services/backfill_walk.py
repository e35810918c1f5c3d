"""Walking one backfill window: pages newest first, one page ahead, empty ranges recorded.

A window [start, end) is walked backwards with `sort=-1`, explicit `start`/`end` and
`limit=10000`: each page is the newest rows left, the next page ends where the previous one's
oldest row starts, and a short page ends the walk. Walking down from the newest end keeps what
is stored contiguous up to the present, so an interrupted walk resumes from the stored first
candle with the plain [first, last final] reckoning of `BackfillService.plan`: no hole is left
between a finished recent stage and a stopped deeper one. While one page is written the next is
already being fetched (one page ahead, no more), so the database and the exchange work at the
same time.

A short page proves the whole rest of the window: when its oldest row is later than the window
start, nothing traded before it and [window start, oldest row) is recorded empty. That is how a
recently listed pair stops at its first candle and why a rerun does not walk the pre-listing
range again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from market_data.errors import MarketDataError
from market_data.exchanges.base import CandlePage, Exchange
from market_data.lifecycle import JobRecord
from market_data.models import SeriesKey
from market_data.ranges import proven_empty
from market_data.rate_limiter import Priority
from market_data.services.backfill_plan import BackfillPlan
from market_data.services.backfill_report import SeriesProgress
from market_data.services.sink import CandleSink
from market_data.storage.base import Store
from market_data.timeframes import format_log_ts

log = logging.getLogger("market_data.services.backfill")

SOURCE = "backfill"
# At most one transaction of the store's bulk write (SQLite commits 5,000 rows at a time).
WRITE_SLICE_ROWS = 5_000


class WindowWalker:
    """The paging half of the backfill service (see `BackfillService`)."""

    _store: Store
    _exchange: Exchange
    _sink: CandleSink
    progress: dict[SeriesKey, SeriesProgress]
    plan_state: BackfillPlan

    def __init__(self) -> None:
        self._limited_seen = 0
        self._stage = ""  # the stage whose requests are being counted
        self._job_base = 0  # the series' candle count when its current job started

    def _count_waits(self, prog: SeriesProgress) -> None:
        # The limiter is shared by the process: 429s while this series runs are counted for it.
        limited = self._exchange.limiter.stats.rate_limited
        prog.rate_limit_waits += limited - self._limited_seen
        self._limited_seen = limited

    async def _fetch(self, pair: str, key: SeriesKey, start: int, end: int) -> CandlePage:
        """The newest rows of [start, end)."""
        return await self._exchange.fetch_candles(
            pair,
            key.timeframe,
            start,
            end - 1,
            limit=self._exchange.limits.page_size,
            sort=-1,
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
        """Walk one window from its end down to its start; False when stopped before."""
        prog = self.progress[key]
        w_start, w_end = window
        high = w_end
        ahead: asyncio.Task[CandlePage] | None = asyncio.create_task(
            self._fetch(pair, key, w_start, high)
        )
        try:
            while ahead is not None:
                page = await ahead
                ahead = None
                prog.requests += 1
                if self._stage:
                    self.plan_state.get(self._stage).requests_done += 1
                self._count_waits(prog)
                oldest = page.min_ts
                full = page.raw_count >= self._exchange.limits.page_size and oldest is not None
                more = full and oldest is not None and w_start < oldest < high
                next_high = oldest if more and oldest is not None else w_start
                if more and not stop.is_set():
                    ahead = asyncio.create_task(self._fetch(pair, key, w_start, next_high))
                await self._write(key, page)
                # A full page proves nothing older than its oldest row; a short one proves the
                # rest of the window down to its start.
                await self._record_empty(key, None if more else w_start, page, high, now)
                prog.done_ms += high - next_high
                high = next_high
                job.candles = prog.candles - self._job_base
                await self._store.update_job_progress(job.id, job.candles)
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
        last (oldest) page that includes [window start, oldest row): how a recently listed pair
        stops at its first candle."""
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
        # Newest rows first, in slices the store commits whole: a process killed mid-page leaves
        # what is stored contiguous up to the present, with no hole for a rerun to miss.
        rows = sorted(page.candles, key=lambda c: c.ts, reverse=True)
        for i in range(0, len(rows), WRITE_SLICE_ROWS):
            result = await self._sink.write(rows[i : i + WRITE_SLICE_ROWS], SOURCE, derive=False)
            prog.candles += result.written
            prog.rejected += len(result.rejected)
