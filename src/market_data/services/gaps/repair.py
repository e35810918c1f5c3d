"""Repairing recorded gaps: fetch from the exchange, upsert through the sink, close the gap.

Slots the exchange answered for without a candle had no trades: they are recorded as empty ranges
(never detected or fetched again) and a gap without any candle is closed as `empty`. The unit of
work is one exchange request: the due native gaps of one series that fit in one exchange page are
fetched together and all closed from its answer (`unit_for`), so a thin pair's dozens of small
gaps cost one request, not one each. A derived gap (4h) is rebuilt from its source (1h):
recomputed when the stored source covers it, otherwise the missing source range is fetched first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from market_data import timeframes as tfm
from market_data.errors import MarketDataError, PayloadError, StorageError, StorageUnavailable
from market_data.models import Candle, Gap, GapStatus, SeriesKey
from market_data.ranges import Range, missing_runs
from market_data.rate_limiter import Priority
from market_data.storage.base import Store

if TYPE_CHECKING:
    from market_data.exchanges.base import Exchange
    from market_data.services.sink import CandleSink

# The seed's gap maintenance lines come from this logger (JSON log lines carry its name).
log = logging.getLogger("market_data.services.gap_repair")

_REFUSED = PayloadError("the exchange sent invalid candles here (quarantined); retrying later")
_LOG_EACH = 50  # per-gap INFO lines per run; the rest go to DEBUG
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed repairs back off: 1, 2, 4, 8 minutes, then `failed` and every 6 hours."""

    max_attempts: int = 5
    base_backoff_ms: int = 60_000
    max_backoff_ms: int = 3_600_000
    failed_retry_ms: int = 6 * tfm.HOUR_MS
    urgent_window_ms: int = tfm.DAY_MS  # gaps this recent are fetched with URGENT priority

    def next_attempt(self, attempts: int, now_ms: int) -> tuple[int, bool]:
        """(next attempt time, failed?) after the `attempts`-th failed attempt."""
        if attempts >= self.max_attempts:
            return now_ms + self.failed_retry_ms, True
        delay = min(self.max_backoff_ms, self.base_backoff_ms * 2 ** max(0, attempts - 1))
        return now_ms + delay, False


@dataclass(slots=True)
class RepairReport:
    attempted: int = 0
    repaired: int = 0  # closed with candles
    empty: int = 0  # closed as empty: the exchange had no trades there
    failures: int = 0
    candles: int = 0
    requests: int = 0  # exchange requests made
    open_gaps: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the job row
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.repaired} repaired, {self.empty} empty, {self.failures} failures, "
            f"{self.candles} candles, open_gaps={self.open_gaps}"
        )


def span(start: int, end: int) -> str:
    return f"from {tfm.format_log_ts(start)} to {tfm.format_log_ts(end)}"


class GapRepairer:
    def __init__(
        self,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        derived: set[SeriesKey],
        clock: Callable[[], int],
        policy: RetryPolicy,
    ) -> None:
        self._store = store
        self._exchange = exchange
        self._sink = sink
        self._derived = derived
        self._clock = clock
        self.policy = policy

    async def unit_for(self, anchor: Gap, *, newest_first: bool, exclude: set[int]) -> list[Gap]:
        """The due open gaps one request repairs together with `anchor`: those of its series
        inside one page's span, reaching back from it (newest first) or on from it (oldest
        first). Gaps in `exclude` (already taken this run) are left out."""
        if anchor.series in self._derived:
            return [anchor]
        page_ms = tfm.nominal_ms(anchor.timeframe) * self._exchange.limits.page_size
        if anchor.gap_end - anchor.gap_start >= page_ms:
            return [anchor]  # wider than a page on its own: it takes its own pages
        if newest_first:
            window = (anchor.gap_end - page_ms, anchor.gap_end)
        else:
            window = (anchor.gap_start, anchor.gap_start + page_ms)
        found = await self._store.list_gaps(
            repaired=False,
            symbol=anchor.symbol,
            timeframe=anchor.timeframe,
            limit=self._exchange.limits.page_size,  # each gap is at least one slot of the page
            due_before_ms=self._clock(),
            within=window,
        )
        unit = [g for g in found if g.id not in exclude and g.id != anchor.id]
        return [anchor, *unit]

    def cost(self, unit: Sequence[Gap]) -> int:
        """Exchange requests a unit is expected to take: one, unless a single gap is wider than
        a page (a derived gap is counted as one; it may take none)."""
        if unit[0].series in self._derived:
            return 1
        page_ms = tfm.nominal_ms(unit[0].timeframe) * self._exchange.limits.page_size
        width = max(g.gap_end for g in unit) - min(g.gap_start for g in unit)
        return max(1, -(-width // page_ms))

    async def repair_unit(self, unit: Sequence[Gap], report: RepairReport) -> None:
        """Repair a unit from `unit_for`. Exchange failures are recorded on its gaps; storage
        errors propagate (the run cannot go on without its database)."""
        gaps = list(unit)
        if gaps[0].series in self._derived:
            await self._guarded(gaps, report, self._repair_derived(gaps[0], report))
            return
        # The newest gap decides: a request that serves a recent gap is urgent, and older gaps
        # of the same page ride along for free (it is one request either way).
        priority = self._priority(max(gaps, key=lambda g: g.gap_end))
        work = self._repair_cluster(gaps[0].series, gaps, priority, report)
        await self._guarded(gaps, report, work)

    async def _guarded(
        self, gaps: list[Gap], report: RepairReport, work: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await work
        except (StorageUnavailable, StorageError):
            raise
        except MarketDataError as exc:
            await self._record_failures(gaps, exc, report)

    async def _record_failures(
        self, gaps: Sequence[Gap], exc: MarketDataError, report: RepairReport
    ) -> None:
        now = self._clock()
        message = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        for gap in gaps:
            attempts = gap.attempts + 1
            next_at, failed = self.policy.next_attempt(attempts, now)
            await self._store.record_gap_failure(gap.id, message, next_at, failed)
            report.attempted += 1
            report.failures += 1
            state = "marked failed, next attempt in" if failed else "next attempt in"
            log.warning(
                "Gap repair failed: %s/%s %s (attempt %d, %s %.0f min): %s",
                gap.symbol,
                gap.timeframe,
                span(gap.gap_start, gap.gap_end),
                attempts,
                state,
                (next_at - now) / tfm.MINUTE_MS,
                message,
            )
        if len(report.errors) < 3:
            report.errors.append(message)

    def _priority(self, gap: Gap) -> Priority:
        recent = self._clock() - gap.gap_end <= self.policy.urgent_window_ms
        return Priority.URGENT if recent else Priority.NORMAL

    async def _fetch(
        self, series: SeriesKey, start: int, end: int, priority: Priority, report: RepairReport
    ) -> tuple[list[Candle], set[int], bool]:
        """Candles of a native series in [start, end), paging forward, the open times the
        exchange sent rows for, and whether it sent rows that were refused (quarantined):
        a refused row's slot is unknown (its time may be the broken field), so then no
        unanswered slot may be taken for empty."""
        tf = series.timeframe
        pair = await self._exchange.pair_for(series.symbol)
        candles: list[Candle] = []
        answered: set[int] = set()
        refused = False
        cursor = start
        page_size = self._exchange.limits.page_size
        while cursor < end:
            page = await self._exchange.fetch_candles(
                pair,
                tf,
                cursor,
                end - 1,
                limit=page_size,
                sort=1,
                priority=priority,
                now_ms=self._clock(),
            )
            report.requests += 1
            rows = [c for c in page.candles if start <= c.ts < end]
            candles.extend(rows)
            answered.update(c.ts for c in rows)
            if page.rejected_count:
                refused = True
                await self._sink.refuse(series, page.rejected, "gap_repair", page.rejected_count)
            if page.raw_count < page_size or page.max_ts is None:
                break
            cursor = tfm.next_open(page.max_ts, tf)
        return candles, answered, refused

    async def _repair_cluster(
        self, series: SeriesKey, cluster: list[Gap], priority: Priority, report: RepairReport
    ) -> None:
        start = min(g.gap_start for g in cluster)
        end = max(g.gap_end for g in cluster)
        for gap in cluster:
            self._log(
                report,
                "Repairing gap: %s/%s %s",
                gap.symbol,
                gap.timeframe,
                span(gap.gap_start, gap.gap_end),
            )
        fetched, answered, refused = await self._fetch(series, start, end, priority, report)
        wanted = [c for c in fetched if any(g.gap_start <= c.ts < g.gap_end for g in cluster)]
        if wanted:
            await self._sink.write(wanted, source="gap_repair")
        settled = self._settled_before(series.timeframe)
        for gap in cluster:
            got = sum(1 for c in wanted if gap.gap_start <= c.ts < gap.gap_end)
            expected = list(tfm.expected_opens(gap.gap_start, gap.gap_end, series.timeframe))
            if refused and got < len(expected):
                await self._record_failures([gap], _REFUSED, report)
                continue
            empty = missing_runs(expected, answered, series.timeframe)
            if empty and empty[-1][1] > settled:
                continue  # an unanswered newest ended period proves nothing yet: stays open
            await self._close(gap, got, empty, report)

    def _settled_before(self, tf: str) -> int:
        """Periods before this open time may be proven empty. The newest ended period is left
        out (as in the backfill): the exchange may publish it a moment late, and an empty range
        is never looked at again."""
        return tfm.previous_open(tfm.align(self._clock(), tf), tf)

    async def _repair_derived(self, gap: Gap, report: RepairReport) -> None:
        series = gap.series
        source = SeriesKey(series.symbol, tfm.source_of(series.timeframe))
        self._log(
            report,
            "Repairing gap: %s/%s %s",
            gap.symbol,
            gap.timeframe,
            span(gap.gap_start, gap.gap_end),
        )
        stored = set(await self._store.open_times_in_range(source, gap.gap_start, gap.gap_end))
        expected = tfm.expected_opens(gap.gap_start, gap.gap_end, source.timeframe)
        holes = missing_runs(expected, stored, source.timeframe)
        known = await self._store.empty_ranges(source, gap.gap_start, gap.gap_end)
        holes = [h for h in holes if not any(k[0] <= h[0] and h[1] <= k[1] for k in known)]
        refused = False
        if holes:
            # The source has a hole here too: repairing the source repairs the derived period.
            lo, hi = holes[0][0], holes[-1][1]
            fetched, answered, refused = await self._fetch(
                source, lo, hi, self._priority(gap), report
            )
            if fetched:
                await self._sink.write(fetched, source="gap_repair")
            empty = (
                []
                if refused
                else missing_runs(
                    tfm.expected_opens(
                        lo, min(hi, self._settled_before(source.timeframe)), source.timeframe
                    ),
                    answered | stored,
                    source.timeframe,
                )
            )
            if empty:
                await self._store.add_empty_ranges(source, empty)
        await self._sink.derived.recompute(
            source,
            gap.gap_start,
            gap.gap_end,
            timeframes=[series.timeframe],
            now_ms=self._clock(),
        )
        rebuilt = set(await self._store.open_times_in_range(series, gap.gap_start, gap.gap_end))
        periods = list(tfm.expected_opens(gap.gap_start, gap.gap_end, series.timeframe))
        if refused and len(rebuilt) < len(periods):
            await self._record_failures([gap], _REFUSED, report)
            return
        await self._close(
            gap, len(rebuilt), missing_runs(periods, rebuilt, series.timeframe), report
        )

    async def _close(
        self, gap: Gap, candles: int, empty: list[Range], report: RepairReport
    ) -> None:
        if empty:
            await self._store.add_empty_ranges(gap.series, empty)
        status = GapStatus.REPAIRED if candles else GapStatus.EMPTY
        await self._store.close_gap(gap.id, status, candles, self._clock())
        report.attempted += 1
        report.candles += candles
        if candles:
            report.repaired += 1
            self._log(report, "Repaired gap with %d candles", candles)
        else:
            report.empty += 1
            self._log(
                report,
                "Gap closed as empty (no trades on the exchange): %s/%s %s",
                gap.symbol,
                gap.timeframe,
                span(gap.gap_start, gap.gap_end),
            )

    @staticmethod
    def _log(report: RepairReport, message: str, *args: object) -> None:
        log.log(logging.INFO if report.attempted < _LOG_EACH else logging.DEBUG, message, *args)
