"""Paged, resumable history, recent first: every series gets its last day, then its last week,
before any series gets deep history; then the derived series (4h from 1h) are rebuilt over what
their source got.

Per series the range is [start, end) with start = now - BACKFILL_DAYS aligned (never older than
the timeframe's retention or the store's retention horizon). It is cut into stages by depth
(services/backfill_plan.py: "day", "week", "deep"); each stage runs across all series before the
next one starts. What is already known is not fetched again: the span from the first stored
candle to the last stored *final* one, and every range the exchange already answered empty
(recorded in the store). The plan (series, requests, ETA) is computed up front from those reads
and re-estimated as each stage starts. Each remaining window is walked newest page first
(services/backfill_walk.py), which keeps the stored span contiguous, so a stopped run resumes
with the same reckoning.

Jobs: one job row per series per stage it had something to fetch in (and one for every series in
the first stage, so a series with nothing left still records its run); derived series get one
per stage their source ran in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from market_data.config import Settings
from market_data.errors import MarketDataError, UnknownSymbol, is_exchange_outage
from market_data.exchanges.base import Exchange
from market_data.lifecycle import JobRecord, describe, recorded_job
from market_data.models import JobStatus, JobType, SeriesKey
from market_data.ranges import Range
from market_data.services.backfill_claims import UNFINISHED, GiveBack, ItemClaim, until_done
from market_data.services.backfill_known import lower_bound, missing_windows
from market_data.services.backfill_plan import (
    DONE,
    STAGES,
    BackfillPlan,
    StageProgress,
    WorkItem,
    items_for_stage,
    stage_bounds,
)
from market_data.services.backfill_report import (
    BackfillReport,
    SeriesProgress,
    SeriesResult,
    build_report,
    order_series,
)
from market_data.services.backfill_walk import SOURCE, WindowWalker
from market_data.services.sink import CandleSink
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import (
    DAY_MS,
    align,
    nominal_ms,
    now_ms,
    source_of,
)

log = logging.getLogger(__name__)

# The seed's module is the backfill's public face; its report types live beside it.
__all__ = [
    "SOURCE",
    "BackfillPlan",
    "BackfillReport",
    "BackfillService",
    "ItemClaim",
    "SeriesProgress",
    "SeriesResult",
    "order_series",
]

_FINAL_STATES = (JobStatus.FAILED, JobStatus.CANCELLED, "skipped")


@dataclass(frozen=True, slots=True)
class _Run:
    """One run's series and stage ranges, fixed when it starts."""

    natives: list[SeriesKey]  # fetched, sources of derived series first
    ordered: list[SeriesKey]  # each source, then the series derived from it
    group: dict[SeriesKey, list[SeriesKey]]  # source -> its derived series
    bounds: dict[SeriesKey, list[tuple[str, int, int]]]  # source -> its stages, newest first
    names: list[str]  # the stages, in run order
    now: int
    plan: BackfillPlan  # what /status shows of the run (the first one when two overlap)


class BackfillService(WindowWalker):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        clock: Callable[[], int] | None = None,
        page_size: int | None = None,
        universe: SeriesUniverse | None = None,
    ) -> None:
        """`page_size` stands in for the exchange's when there is none (a plan preview)."""
        super().__init__()
        self._settings = settings
        self._universe = universe or SeriesUniverse.static(settings)
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._clock = clock or now_ms
        self.progress: dict[SeriesKey, SeriesProgress] = {}
        self.plan_state = BackfillPlan()
        self._preview_page_size = page_size
        self._runs = 0  # runs going on now (a newly listed pair's may run beside another)

    @property
    def _page_size(self) -> int:
        return self._preview_page_size or self._exchange.limits.page_size

    async def run(
        self,
        series: Sequence[SeriesKey] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        stop: asyncio.Event | None = None,
        claim: ItemClaim | None = None,
    ) -> BackfillReport:
        """Backfill `series` (default: every active one) over [start_ms, end_ms), stage by
        stage. With `claim` (several daemons run the same backfill), an item is walked only
        by the daemon that claims it, re-planned from the store at that moment."""
        self._runs += 1
        try:
            return await self._run(series, start_ms, end_ms, stop, claim)
        finally:
            self._runs -= 1

    async def _run(
        self,
        series: Sequence[SeriesKey] | None,
        start_ms: int | None,
        end_ms: int | None,
        stop: asyncio.Event | None,
        claim: ItemClaim | None,
    ) -> BackfillReport:
        stop = stop or asyncio.Event()
        run = self._prepare(series, start_ms, end_ms)
        natives, names, plan = run.natives, run.names, run.plan
        started = time.monotonic()
        items = await self._estimate(names, natives, run)
        log.info(
            "Backfill plan: %d series, %d requests (%s), %.1f s to plan",
            len(natives),
            plan.requests_left,
            ", ".join(f"{s.name} {s.requests}" for s in plan.stages),
            time.monotonic() - started,
        )
        active = set(natives)
        ran: set[SeriesKey] = set()
        held: list[WorkItem] = []  # items others held when this run came to them
        cancelled = False
        for idx, name in enumerate(names):
            if idx:  # re-estimated: what the earlier stages found changes what is left
                items = await self._estimate(names[idx:], [k for k in natives if k in active], run)
            plan.stage = name
            later = {i.series for n in names[idx + 1 :] for i in items.get(n, []) if i.windows}
            for item in items.get(name, []):
                key = item.series
                if key not in active or (not item.windows and key in ran):
                    continue
                if stop.is_set():
                    cancelled = True
                    break
                if claim is None:
                    await self._run_item(item, run, stop, key in later)
                elif await self._claimed_item(claim, item, run, stop, key in later) is None:
                    held.append(item)
                ran.add(key)
                state = self.progress[key].state
                if state in _FINAL_STATES:
                    active.discard(key)
                if state == JobStatus.CANCELLED:
                    cancelled = True
                    break
            if cancelled:
                break
            plan.get(name).done = True
        if not cancelled and claim is not None and held:
            # Walked late, an item's derived series are rebuilt over the whole run's range.
            cancelled = not await until_done(
                lambda i: self._claimed_item(claim, i, run, stop, later=False), held, stop
            )
        if not cancelled:
            plan.stage = DONE
        return build_report(self.progress, run.ordered, natives, ran, cancelled)

    async def preview(
        self,
        series: Sequence[SeriesKey] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> BackfillPlan:
        """The plan a run would start with, from the store alone: nothing is fetched."""
        run = self._prepare(series, start_ms, end_ms)
        await self._estimate(run.names, run.natives, run)
        plan = run.plan
        plan.stage = next((s.name for s in plan.stages if s.requests_left), DONE)
        return plan

    def _prepare(
        self, series: Sequence[SeriesKey] | None, start_ms: int | None, end_ms: int | None
    ) -> _Run:
        wanted = list(series) if series is not None else self._universe.all_series()
        natives, derived = order_series(wanted)
        group = {k: self._derived_of(k, derived) for k in natives}
        # In run order: each source, then the series derived from it.
        ordered = [k2 for k in natives for k2 in [k, *group[k]]]
        fresh = {k: SeriesProgress(k.symbol, k.timeframe) for k in ordered + derived}
        # A run still going keeps its series in view (and in reach of its own lookups).
        self.progress = {**self.progress, **fresh} if self._runs > 1 else fresh
        now = self._clock()
        end = now if end_ms is None else min(end_ms, now)
        days_ms = round(self._settings.backfill_days * DAY_MS)
        base = start_ms if start_ms is not None else now - days_ms
        bounds: dict[SeriesKey, list[tuple[str, int, int]]] = {}
        for key in natives:
            tfs = [key.timeframe, *(d.timeframe for d in group[key])]
            # A source starts at its derived series' period start: no partial first 4h candle.
            start = min(align(base, tf) for tf in tfs)
            bounds[key] = stage_bounds(start, end, tfs)
            if bounds[key] and (end - start) // nominal_ms(key.timeframe) < self._page_size:
                # One page holds the whole range (1h for a year): staging it would cost a
                # request per stage for nothing, so it all comes with the first stage.
                bounds[key] = [(bounds[key][0][0], start, end)]
        names = list(dict.fromkeys(n for b in bounds.values() for n, _, _ in b))
        names.sort(key=[n for n, _ in STAGES].index)
        plan = BackfillPlan(
            stages=[StageProgress(n) for n in names], stage=names[0] if names else DONE
        )
        if self._runs <= 1:  # a run beside another (a newly listed pair's) keeps its plan apart
            self.plan_state = plan
        return _Run(natives, ordered, group, bounds, names, now, plan)

    async def _estimate(
        self, names: Sequence[str], keys: Sequence[SeriesKey], run: _Run
    ) -> dict[str, list[WorkItem]]:
        """Items of the stages `names` for `keys`, from one `plan` reading per series."""
        bounds, plan = run.bounds, run.plan
        keys = [k for k in keys if bounds[k]]  # none when the range is empty (a future start)
        windows = await self.plan_many(
            {k: (bounds[k][-1][1], bounds[k][0][2]) for k in keys}, run.now
        )
        for key in keys:
            prog = self.progress[key]
            prog.total_ms = prog.done_ms + sum(b - a for a, b in windows[key])
        page_size = self._page_size
        result: dict[str, list[WorkItem]] = {}
        for name in names:
            known = {k: (lo, hi, windows[k]) for k in keys for n, lo, hi in bounds[k] if n == name}
            result[name] = items_for_stage(name, known, page_size)
            plan.set_items(name, result[name])
        return result

    @staticmethod
    def _derived_of(source: SeriesKey, derived: Sequence[SeriesKey]) -> list[SeriesKey]:
        return [
            d
            for d in derived
            if d.symbol == source.symbol and source_of(d.timeframe) == source.timeframe
        ]

    async def _lower_bound(self, key: SeriesKey, start: int, now: int) -> int:
        horizon = await self._store.get_retention_horizon(key)
        return lower_bound(self._settings, key, start, now, horizon)

    async def plan(self, key: SeriesKey, start: int, end: int, now: int) -> list[tuple[int, int]]:
        """The windows still to fetch for `key` in [start, end)."""
        return (await self.plan_many({key: (start, end)}, now))[key]

    async def plan_many(
        self, ranges: Mapping[SeriesKey, tuple[int, int]], now: int
    ) -> dict[SeriesKey, list[Range]]:
        """The windows still to fetch per series in its [start, end) (backfill_known.py)."""
        return await missing_windows(self._store, self._settings, ranges, now)

    async def _claimed_item(
        self, claim: ItemClaim, item: WorkItem, run: _Run, stop: asyncio.Event, later: bool
    ) -> bool | None:
        """Walk the item if this daemon claims it; the claim's answer. An item that failed or
        was cancelled is given back rather than marked done, so a retry (here or elsewhere)
        claims it again."""
        try:
            async with claim(item.series, item.stage, item.start, item.end) as mine:
                if not mine:  # another daemon walks it (and rebuilds its derived series)
                    if mine is not None:
                        run.plan.get(item.stage).requests_done += item.requests
                    return mine
                # What another daemon fetched meanwhile is known now: only the rest is walked.
                fresh = await self.plan_many({item.series: (item.start, item.end)}, run.now)
                walk = replace(item, windows=tuple(fresh[item.series]))
                await self._run_item(walk, run, stop, later)
                if self.progress[item.series].state in UNFINISHED:
                    raise GiveBack
                return True
        except GiveBack:
            return True

    async def _run_item(self, item: WorkItem, run: _Run, stop: asyncio.Event, later: bool) -> None:
        """Walk one item, then rebuild the series derived from it over the stage's range (over
        the whole run's range once the source has nothing left in later stages)."""
        key = item.series
        self._stage = item.stage
        await self.walk_item(item, run.now, stop)
        prog = self.progress[key]
        if prog.state == "skipped":
            for dkey in run.group[key]:
                self.progress[dkey].state = "skipped"
            return
        if prog.state == JobStatus.SUCCESS and later:
            prog.state, prog.finished = "pending", None  # waits for the next stage
        # Rebuilt right after the source, even when it stopped early: what landed is
        # aggregated now, the rest on the next run.
        low = item.start if later else run.bounds[key][-1][1]
        for dkey in run.group[key]:
            await self._run_derived(dkey, align(low, dkey.timeframe), item.end, run.now)

    async def walk_item(self, item: WorkItem, now: int, stop: asyncio.Event) -> None:
        """Execute one work item: walk its windows under one job row. Items do not depend on
        one another (each is its own windows of one series), so they could be handed out to
        several workers; derived series are rebuilt by whoever ran their source's item."""
        key = item.series
        prog = self.progress.setdefault(key, SeriesProgress(key.symbol, key.timeframe))
        prog.state, prog.finished = JobStatus.RUNNING, None
        prog.started = prog.started or time.monotonic()
        prog.exchange_outage = False
        self._limited_seen = self._exchange.limiter.stats.rate_limited
        self._job_base = prog.candles
        try:
            async with recorded_job(
                self._store, JobType.BACKFILL, key.symbol, key.timeframe, logger=log
            ) as job:
                await self._fetch_item(job, item, now, stop)
        except asyncio.CancelledError:
            prog.state, prog.finished = JobStatus.CANCELLED, time.monotonic()
            raise
        prog.finished = time.monotonic()
        if prog.state != "skipped":
            prog.state = str(job.status)
        prog.error = job.error

    async def _fetch_item(
        self, job: JobRecord, item: WorkItem, now: int, stop: asyncio.Event
    ) -> None:
        """Walk every window of the item; the outcome goes on the job."""
        key = item.series
        prog = self.progress[key]
        try:
            pair = await self._exchange.pair_for(key.symbol)
            for window in item.windows:
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
        job.candles = prog.candles - self._job_base

    async def _run_derived(self, key: SeriesKey, start: int, end: int, now: int) -> None:
        prog = self.progress[key]
        prog.state, prog.finished = JobStatus.RUNNING, None
        prog.started = prog.started or time.monotonic()
        source = SeriesKey(key.symbol, source_of(key.timeframe))
        async with recorded_job(
            self._store, JobType.BACKFILL, key.symbol, key.timeframe, logger=log
        ) as job:
            try:
                lower = await self._lower_bound(key, start, now)
                prog.total_ms = max(prog.total_ms, end - lower)
                if lower < end:
                    result = await self._sink.derived.recompute(
                        source, lower, end, timeframes=[key.timeframe], now_ms=self._clock()
                    )
                    job.candles = result.written
                    prog.candles += result.written
                    prog.rejected += len(result.rejected)
                prog.done_ms = prog.total_ms
            except MarketDataError as exc:
                job.fail(describe(exc))
                log.error("Backfill %s failed: %s", key, job.error)
        prog.state, prog.error, prog.finished = str(job.status), job.error, time.monotonic()
