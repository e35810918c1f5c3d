"""Gap detection and repair: the seed's gap maintenance.

`detect()` records holes in `data_gaps` (`gaps/detect.py` explains how it stays incremental);
`repair()` fetches open gaps from the exchange and closes them (`gaps/repair.py`), within a budget
of exchange requests per run (`GAP_REPAIR_MAX_REPAIRS_PER_RUN`, 0 = no limit): the most recent gaps
first, with a fixed share of every run (`request_shares`) spent on the oldest, so a backlog shrinks
even while new gaps keep opening. One request closes every gap of its series within one page.
A repair that fails backs off (exponentially, then at a slow cadence once it is marked `failed`);
it is never dropped.

The daemon runs `detect()` and `repair()` on their own cadences; they never overlap (one lock), and
between them they write the seed's log lines in the seed's order:
`Running gap detection and repair...` and `Gap detected: ...` from detection, `Repairing gap: ...`,
`Repaired gap with N candles` and `Gap maintenance complete: ...` from repair, where "new gaps"
counts the gaps detected since the previous such line. `maintain()` runs both, as one cycle.
Each call records its own ingestion job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from market_data.lifecycle import MAX_ERROR_CHARS, JobRecord, recorded_job
from market_data.models import Gap, JobType, SeriesKey, SeriesStats
from market_data.services.gaps.detect import GapDetector, ScanRequest
from market_data.services.gaps.repair import GapRepairer, RepairReport, RetryPolicy, span
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import align, now_ms, source_of

if TYPE_CHECKING:
    from market_data.config import Settings
    from market_data.exchanges.base import Exchange
    from market_data.services.sink import CandleSink

__all__ = [
    "DetectionReport",
    "GapService",
    "GapStats",
    "RepairReport",
    "RetryPolicy",
    "request_shares",
]

# The seed's gap maintenance lines come from this logger (JSON log lines carry its name).
log = logging.getLogger("market_data.services.gap_repair")

_DUE_BATCH = 500  # open gaps read per round
_LOG_EACH = 50  # "Gap detected" INFO lines per run; the rest go to DEBUG


def request_shares(limit: int, run_number: int) -> tuple[int, int]:
    """How a run of `limit` requests is split: (for the most recent gaps, for the oldest).
    The oldest get a quarter, at least one, so a backlog cannot starve behind new gaps; a
    budget of a single request serves them every other run instead."""
    if limit == 1:
        return (0, 1) if run_number % 2 else (1, 0)
    oldest = max(1, limit // 4)
    return limit - oldest, oldest


@dataclass(slots=True)
class GapStats:
    """Counters for /status and /metrics."""

    detection_runs: int = 0
    detection_skipped: int = 0
    gaps_detected: int = 0
    repair_runs: int = 0
    gaps_repaired: int = 0
    gaps_empty: int = 0
    repair_failures: int = 0
    candles_repaired: int = 0
    repair_requests: int = 0
    open_gaps: int | None = None
    last_detection_ms: int | None = None
    last_detection_seconds: float | None = None
    last_repair_ms: int | None = None
    last_repair_seconds: float | None = None


@dataclass(slots=True)
class DetectionReport:
    new_gaps: list[Gap] = field(default_factory=list)
    series_scanned: int = 0
    skipped_reason: str | None = None
    open_gaps: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.skipped_reason:
            return f"skipped: {self.skipped_reason}"
        return f"{len(self.new_gaps)} new gaps in {self.series_scanned} series"


class GapService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        clock: Callable[[], int] = now_ms,
        policy: RetryPolicy | None = None,
        universe: SeriesUniverse | None = None,
        unconfirmed: Callable[[], Mapping[SeriesKey, int]] | None = None,
        claim: Callable[[SeriesKey], AbstractAsyncContextManager[bool]] | None = None,
    ) -> None:
        self._settings = settings
        # Per series, the oldest period the live stream watches that REST has not confirmed
        # yet: not a gap (yet), so detection stops before it.
        self._unconfirmed = unconfirmed
        # Several daemons on one database: a series' gaps are repaired by the one claiming it.
        self._claim = claim
        self._store = store
        self._clock = clock
        self._universe = universe or SeriesUniverse.static(settings)
        # One set shared with the repairer, refreshed in place from the universe each run.
        self._derived: set[SeriesKey] = set(self._universe.known_derived())
        self.detector = GapDetector(store, settings.retention_ms, clock)
        self.repairer = GapRepairer(
            store, exchange, sink, self._derived, clock, policy or RetryPolicy()
        )
        self.stats = GapStats()
        self._lock = asyncio.Lock()
        self._new_since_summary = 0

    async def maintain(self) -> tuple[DetectionReport, RepairReport]:
        """One cycle of the seed's loop: detect, then repair."""
        return await self.detect(), await self.repair()

    # -- detection ------------------------------------------------------------------------------
    async def detect(self, *, full: bool = False) -> DetectionReport:
        """Record new gaps. `full` re-scans every series whole (e.g. after rows were deleted by
        hand behind the detector's watermark)."""
        async with self._lock:
            log.info("Running gap detection and repair...")
            started = time.perf_counter()
            async with recorded_job(self._store, JobType.GAP_DETECTION, logger=log) as job:
                report = await self._detect(job, full)
            report.seconds = time.perf_counter() - started
            self.stats.last_detection_seconds = report.seconds
            return report

    async def _detect(self, job: JobRecord, full: bool) -> DetectionReport:
        report = DetectionReport()
        limit = self._settings.gap_detection_max_open_gaps
        if limit > 0:
            report.open_gaps = await self._store.count_open_gaps()
            self.stats.open_gaps = report.open_gaps
        if limit > 0 and report.open_gaps > limit:
            report.skipped_reason = (
                f"{report.open_gaps} open gaps exceed GAP_DETECTION_MAX_OPEN_GAPS={limit}; "
                "repairs first"
            )
            log.warning("Gap detection skipped: %s", report.skipped_reason)
            self.stats.detection_skipped += 1
            job.cancel(report.skipped_reason)
            return report
        stats = {SeriesKey(s.symbol, s.timeframe): s for s in await self._store.series_stats()}
        self._sync_derived()
        series_list = self._series()  # active ones: a delisted series gains no new gaps
        unconfirmed = self._unconfirmed() if self._unconfirmed is not None else {}
        requests = [
            ScanRequest(
                key,
                stats.get(key),
                self._extra_floor(key, stats),
                self._unconfirmed_of(key, unconfirmed),
            )
            for key in series_list
        ]
        holes = await self.detector.scan(requests, full=full)
        if holes:
            report.new_gaps.extend(await self._store.create_gaps_many(holes))
        report.series_scanned = len(series_list)
        report.open_gaps = await self._store.count_open_gaps()
        self._log_new(report.new_gaps)
        log.info(
            "Gap detection complete: %d new gaps in %d series, open_gaps=%d",
            len(report.new_gaps),
            report.series_scanned,
            report.open_gaps,
        )
        st = self.stats
        st.detection_runs += 1
        st.gaps_detected += len(report.new_gaps)
        st.open_gaps = report.open_gaps
        st.last_detection_ms = self._clock()
        self._new_since_summary += len(report.new_gaps)
        return report

    def _series(self) -> list[SeriesKey]:
        native = self._universe.native_series()
        return native + sorted(self._universe.derived_series(), key=str)

    def _sync_derived(self) -> None:
        known = self._universe.known_derived()
        if known != self._derived:
            self._derived.clear()
            self._derived.update(known)

    def _unconfirmed_of(
        self, series: SeriesKey, unconfirmed: Mapping[SeriesKey, int]
    ) -> int | None:
        """A derived series waits for its source: its period holding the source's oldest
        unconfirmed one is not complete yet."""
        if series not in self._derived:
            return unconfirmed.get(series)
        source = unconfirmed.get(SeriesKey(series.symbol, source_of(series.timeframe)))
        return None if source is None else align(source, series.timeframe)

    def _extra_floor(self, series: SeriesKey, stats: dict[SeriesKey, SeriesStats]) -> int:
        """A derived range older than its source's first stored candle (retention purged it
        there, or it was never fetched) could only be rebuilt by fetching source rows the
        retention would purge again: leave it alone."""
        if series not in self._derived:
            return 0
        source = stats.get(SeriesKey(series.symbol, source_of(series.timeframe)))
        return 0 if source is None or source.first_ts is None else source.first_ts

    @staticmethod
    def _log_new(gaps: Sequence[Gap]) -> None:
        for i, gap in enumerate(sorted(gaps, key=lambda g: (g.symbol, g.timeframe, g.gap_start))):
            log.log(
                logging.INFO if i < _LOG_EACH else logging.DEBUG,
                "Gap detected: %s/%s %s",
                gap.symbol,
                gap.timeframe,
                span(gap.gap_start, gap.gap_end),
            )
        if len(gaps) > _LOG_EACH:
            log.info("... and %d more gaps detected (listed at DEBUG)", len(gaps) - _LOG_EACH)

    # -- repair ---------------------------------------------------------------------------------
    async def repair(self, max_repairs: int | None = None) -> RepairReport:
        """Repair due gaps with at most `max_repairs` exchange requests (None: the setting;
        0: no limit, every due gap)."""
        setting = self._settings.gap_repair_max_repairs_per_run
        limit = setting if max_repairs is None else max_repairs
        async with self._lock:
            started = time.perf_counter()
            self._sync_derived()
            report = RepairReport()
            async with recorded_job(self._store, JobType.GAP_REPAIR, logger=log) as job:
                await self._repair(limit, report)
                report.open_gaps = await self._store.count_open_gaps()
                self._finish_repair(job, report, started)
            return report

    def _finish_repair(self, job: JobRecord, report: RepairReport, started: float) -> None:
        """Count the run, write the seed's summary line, and set the job's outcome."""
        report.seconds = time.perf_counter() - started
        self._count(report)
        log.info(
            "Gap maintenance complete: %d new gaps, %d repaired, %d failures, open_gaps=%d",
            self._new_since_summary,
            report.repaired + report.empty,
            report.failures,
            report.open_gaps,
        )
        self._new_since_summary = 0
        closed = report.repaired + report.empty
        job.candles = report.candles
        error = "; ".join(report.errors)[:MAX_ERROR_CHARS] or None
        if report.failures and not closed:
            job.fail(error)
        else:
            job.error = error

    async def _repair(self, limit: int, report: RepairReport) -> None:
        taken: set[int] = set()
        if limit == 0:
            await self._spend(report, taken, newest_first=True, budget=None)
            return
        recent, oldest = request_shares(limit, self.stats.repair_runs)
        await self._spend(report, taken, newest_first=True, budget=recent)
        # What the recent gaps left unspent goes to the oldest too; their share holds even when
        # a gap wider than a page overran the budget.
        await self._spend(
            report, taken, newest_first=False, budget=max(oldest, limit - report.requests)
        )

    async def _spend(
        self, report: RepairReport, taken: set[int], *, newest_first: bool, budget: int | None
    ) -> None:
        """Repair due gaps, newest or oldest first, one request's worth at a time, until
        `budget` requests are made (None: until none is due). A unit starts only when its
        expected requests fit what is left, except the first (a gap wider than a page would
        otherwise never be repaired)."""
        if budget == 0:
            return
        spent_before = report.requests
        while True:
            # Closed gaps leave the list and failed ones are no longer due; `taken` stops a
            # run from going round the few left open (an unproven newest period).
            due = await self._store.list_gaps(
                repaired=False,
                limit=_DUE_BATCH + len(taken),
                due_before_ms=self._clock(),
                oldest_first=not newest_first,
            )
            # A delisted pair's gaps stay open but are not repaired: skipped for this run.
            taken.update(g.id for g in due if self._universe.state_of(g.symbol) == "delisted")
            batch = [g for g in due if g.id not in taken][:_DUE_BATCH]
            if not batch:
                return
            for anchor in batch:
                if anchor.id in taken:
                    continue  # closed by an earlier unit of this batch
                spent = report.requests - spent_before
                if budget is not None and spent >= budget:
                    return
                unit = await self.repairer.unit_for(
                    anchor, newest_first=newest_first, exclude=taken
                )
                if budget is not None and spent and spent + self.repairer.cost(unit) > budget:
                    return
                taken.update(g.id for g in unit)
                if self._claim is None:
                    await self.repairer.repair_unit(unit, report)
                    continue
                async with self._claim(unit[0].series) as mine:
                    if mine:  # else another daemon repairs this series now
                        await self.repairer.repair_unit(unit, report)

    def _count(self, report: RepairReport) -> None:
        st = self.stats
        st.repair_runs += 1
        st.gaps_repaired += report.repaired
        st.gaps_empty += report.empty
        st.repair_failures += report.failures
        st.candles_repaired += report.candles
        st.repair_requests += report.requests
        st.open_gaps = report.open_gaps
        st.last_repair_ms = self._clock()
        st.last_repair_seconds = report.seconds
