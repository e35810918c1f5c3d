"""The REST update loop: the latest candles of every native series, a fallback for WebSocket.

Each run asks the exchange for the newest `UPDATE_CANDLES` candles of each series (newest first,
one request each, NORMAL priority through the rate limiter) and upserts them through the sink;
the still-open candle is stored with final=False and replaced once it closes. Derived series
follow through the sink. One `update` job per run. The periods a page answered for without a
candle (no trades) are recorded empty (`ranges.proven_empty`), so gap detection skips them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from market_data import timeframes as tfm
from market_data.errors import (
    MarketDataError,
    StorageError,
    StorageUnavailable,
    UnknownSymbol,
)
from market_data.lifecycle import MAX_ERROR_CHARS, recorded_job
from market_data.models import JobType, SeriesKey
from market_data.ranges import proven_empty
from market_data.rate_limiter import Priority
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import now_ms

if TYPE_CHECKING:
    from market_data.config import Settings
    from market_data.exchanges.base import Exchange
    from market_data.services.sink import CandleSink

log = logging.getLogger(__name__)

UPDATE_CANDLES = 10


@dataclass(slots=True)
class UpdateStats:
    runs: int = 0
    candles_written: int = 0
    requests: int = 0
    failures: int = 0
    last_run_ms: int | None = None
    last_error: str | None = None


class UpdateService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        clock: Callable[[], int] = now_ms,
        universe: SeriesUniverse | None = None,
    ) -> None:
        self._settings = settings
        self._universe = universe or SeriesUniverse.static(settings)
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._clock = clock
        self._unknown: set[str] = set()  # symbols already reported as unlisted
        self.stats = UpdateStats()

    async def run_once(self) -> int:
        """Fetch and upsert the latest candles of every native series; returns candles written."""
        errors: list[str] = []
        series_list = self._universe.native_series()  # delisted pairs are not updated
        async with recorded_job(self._store, JobType.UPDATE, logger=log) as job:
            for series in series_list:
                try:
                    job.candles += await self._update(series)
                except (StorageUnavailable, StorageError):
                    raise
                except UnknownSymbol as exc:
                    if series.symbol not in self._unknown:
                        self._unknown.add(series.symbol)
                        log.warning("Update skips %s: %s", series.symbol, exc)
                except MarketDataError as exc:
                    self.stats.failures += 1
                    errors.append(f"{series}: {type(exc).__name__}: {exc}")
                    log.warning("Update of %s failed: %s", series, exc)
            written = job.candles
            st = self.stats
            st.runs += 1
            st.candles_written += written
            st.last_run_ms = self._clock()
            st.last_error = errors[-1] if errors else None
            error = "; ".join(errors)[:MAX_ERROR_CHARS] or None
            if errors and len(errors) >= len(series_list):
                job.fail(error)
            else:
                job.error = error
        log.debug("Update wrote %d candles for %d series", written, len(series_list))
        return written

    async def _update(self, series: SeriesKey) -> int:
        now = self._clock()
        tf = series.timeframe
        pair = await self._exchange.pair_for(series.symbol)
        count = min(UPDATE_CANDLES, self._exchange.limits.page_size)
        start = now - count * tfm.nominal_ms(tf)
        page = await self._exchange.fetch_candles(
            pair,
            tf,
            start,
            now,
            limit=count,
            sort=-1,
            priority=Priority.NORMAL,
            now_ms=now,
        )
        self.stats.requests += 1
        if page.rejected_count:
            await self._sink.refuse(series, page.rejected, "update", page.rejected_count)
        written = (await self._sink.write(page.candles, source="update")).written
        # Newest first with a row limit: a full page says nothing before its oldest row.
        full = page.raw_count >= count
        ranges = proven_empty(
            [c.ts for c in page.candles],
            None if full else tfm.ceil_open(start, tf),  # `start` is unaligned: round up
            now,
            now,
            tf,
            refused=page.rejected_count,
        )
        if ranges:
            await self._store.add_empty_ranges(series, ranges)
        return written
