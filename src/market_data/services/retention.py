"""Retention cleanup: drop candles older than `RETENTION_<TF>` days, per timeframe.

Deletes run in bounded batches (each its own short transaction, `store.delete_candles_before`) so
no huge delete holds the table. Gap rows that fall out of retention go too, and the series'
retention horizon is recorded so that neither gap detection nor the backfill fetches the purged
range again. Every stored series counts, configured or not, derived ones included; a timeframe
without a retention setting is kept forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from market_data import timeframes as tfm
from market_data.lifecycle import recorded_job
from market_data.models import JobType, SeriesKey
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import now_ms

if TYPE_CHECKING:
    from market_data.config import Settings

log = logging.getLogger(__name__)

DELETE_BATCH = 10_000  # rows per delete transaction


@dataclass(slots=True)
class RetentionStats:
    runs: int = 0
    deleted_total: int = 0
    last_deleted: int | None = None
    last_run_ms: int | None = None
    last_seconds: float | None = None
    deleted_by_timeframe: dict[str, int] = field(default_factory=dict)


def cutoff_ms(now_ms: int, retention_ms: int, timeframe: str) -> int:
    """First open time kept: candles opening before `now - retention` go (aligned up, so the
    horizon is a period boundary)."""
    return tfm.ceil_open(now_ms - retention_ms, timeframe)


class RetentionService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], int] = now_ms,
        batch_size: int = DELETE_BATCH,
        universe: SeriesUniverse | None = None,
    ) -> None:
        self._settings = settings
        self._universe = universe or SeriesUniverse.static(settings)
        self._store = store
        self._clock = clock
        self._batch_size = batch_size
        self.stats = RetentionStats()

    async def _series(self) -> list[SeriesKey]:
        stored = [SeriesKey(s.symbol, s.timeframe) for s in await self._store.series_stats()]
        # Stored series include the delisted ones: their data ages out like any other.
        return list(dict.fromkeys(stored + self._universe.all_series()))

    async def run_once(self) -> int:
        """One cleanup: returns the number of candles deleted."""
        started = time.perf_counter()
        by_tf: dict[str, int] = {}
        async with recorded_job(self._store, JobType.CLEANUP, logger=log) as job:
            now = self._clock()
            for series in await self._series():
                retention = self._settings.retention_ms(series.timeframe)
                if retention is None:
                    continue
                cutoff = cutoff_ms(now, retention, series.timeframe)
                # Horizon first: a backfill running meanwhile must not refill what goes now.
                await self._store.set_retention_horizon(series, cutoff)
                count = await self._store.delete_candles_before(series, cutoff, self._batch_size)
                await self._store.delete_gaps_before(series, cutoff)
                job.candles += count
                by_tf[series.timeframe] = by_tf.get(series.timeframe, 0) + count
            deleted = job.candles
            seconds = time.perf_counter() - started
            detail = ", ".join(f"{tf}: {n}" for tf, n in sorted(by_tf.items()) if n)
            log.info(
                "Deleted %d old candles%s in %.1f s",
                deleted,
                f" ({detail})" if detail else "",
                seconds,
            )
            st = self.stats
            st.runs += 1
            st.deleted_total += deleted
            st.last_deleted = deleted
            st.last_run_ms = self._clock()
            st.last_seconds = seconds
            for tf, n in by_tf.items():
                st.deleted_by_timeframe[tf] = st.deleted_by_timeframe.get(tf, 0) + n
        return deleted
