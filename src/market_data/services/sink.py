"""The one write path for candles: every service (backfill, WebSocket, gap repair, update) calls
`CandleSink.write`, so counting, quarantine and derived timeframes happen in one place."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from market_data.config import Settings
from market_data.models import Candle, RejectedRow, SeriesKey
from market_data.services.derived import DerivedAggregator
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import QuarantineItem, Store, UpsertResult
from market_data.timeframes import next_open, now_ms

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkStats:
    """Counters read by /status and the metrics collector."""

    written_by_source: dict[str, int] = field(default_factory=dict)
    rejected_by_source: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    derived_written: int = 0
    derived_recomputes: int = 0
    last_write_ms: int | None = None


class CandleSink:
    def __init__(
        self, store: Store, settings: Settings, universe: SeriesUniverse | None = None
    ) -> None:
        self._store = store
        self.stats = SinkStats()
        # Every derived write is counted here, whoever asked for it (the sink itself, the
        # backfill's range rebuild, gap repair).
        self.derived = DerivedAggregator(
            store,
            settings,
            write=self._write_derived,
            on_write=self._count_derived,
            universe=universe,
        )

    async def write(
        self, candles: Sequence[Candle], source: str, *, derive: bool = True
    ) -> UpsertResult:
        """Upsert `candles`; the store quarantines and lists rejected rows, the rest land.

        When written candles are the source of a derived timeframe, the derived periods they
        touch are recomputed from the store (so a late or corrected source row shows up there).
        `derive=False` leaves that to the caller (the backfill rebuilds a whole range at once).
        """
        if not candles:
            return UpsertResult()
        result = await self._store.upsert_candles(candles)
        stats = self.stats
        stats.writes += 1
        stats.last_write_ms = now_ms()
        stats.written_by_source[source] = stats.written_by_source.get(source, 0) + result.written
        if result.rejected:
            stats.rejected_by_source[source] = stats.rejected_by_source.get(source, 0) + len(
                result.rejected
            )
            for rejected in result.rejected[:5]:
                log.warning(
                    "Rejected candle from %s: %s @ %s: %s",
                    source,
                    rejected.candle.series,
                    rejected.candle.ts,
                    rejected.reason,
                )
        if derive and result.written and self.derived.derived_series:
            await self._recompute_touched(candles, result)
        return result

    async def refuse(
        self, series: SeriesKey, rows: Sequence[RejectedRow], source: str, count: int | None = None
    ) -> None:
        """Count rows a parser refused before they reached `write`, and keep them in quarantine.

        `count` is the number refused when `rows` holds only the first few of them.
        """
        refused = len(rows) if count is None else max(count, len(rows))
        if not refused:
            return
        stats = self.stats
        stats.rejected_by_source[source] = stats.rejected_by_source.get(source, 0) + refused
        if rows:
            await self._store.quarantine(
                [
                    QuarantineItem(source, series.symbol, series.timeframe, r.ts, r.raw, r.reason)
                    for r in rows
                ]
            )

    async def _recompute_touched(self, candles: Sequence[Candle], result: UpsertResult) -> None:
        refused = {(r.candle.series, r.candle.ts) for r in result.rejected}
        spans: dict[SeriesKey, tuple[int, int]] = {}
        for candle in candles:
            key = candle.series
            if (key, candle.ts) in refused:
                continue
            low, high = spans.get(key, (candle.ts, candle.ts))
            spans[key] = (min(low, candle.ts), max(high, candle.ts))
        for series, (low, high) in spans.items():
            if not self.derived.targets(series):
                continue
            await self.derived.recompute(series, low, next_open(high, series.timeframe))

    async def _write_derived(self, candles: Sequence[Candle]) -> UpsertResult:
        """The aggregator's writes: upserted here like every other write (not re-derived, and
        counted as derived, not by source, through `_count_derived`)."""
        return await self._store.upsert_candles(candles)

    def _count_derived(self, result: UpsertResult) -> None:
        self.stats.derived_recomputes += 1
        self.stats.derived_written += result.written
