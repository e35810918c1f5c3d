"""Derived timeframes: candles Bitfinex does not serve (2h, 4h, 8h), aggregated from a native one.

A derived candle covers the UTC-aligned period `timeframes.align(ts, derived_tf)` and is built from
the source candles that exist in it: open of the first, close of the last, the highest high, the
lowest low, the sum of the volumes. A period with no source candle has no derived candle, exactly
as the exchange leaves out periods without trades.

Finality: a derived candle is final only when its period has ended at `now_ms` AND every source
candle in it is final. A source candle that is missing at that point is taken as "no trades" (the
exchange's rule); if it turns up later (a late WebSocket update, a repaired gap), the sink
recomputes the period and the store replaces the final derived row because its values differ.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from market_data.config import Settings
from market_data.models import Candle, SeriesKey
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store, UpsertResult
from market_data.timeframes import align, ceil_open, is_fixed, next_open, nominal_ms, source_of
from market_data.timeframes import now_ms as wall_now_ms

# Rows read from the store per round trip while recomputing; bounds memory on long ranges.
READ_PAGE = 10_000


class DerivationError(ValueError):
    """The source candles cannot build this derived timeframe."""


def _check_source(source_tf: str, derived_tf: str) -> None:
    if not (is_fixed(source_tf) and is_fixed(derived_tf)):
        raise DerivationError(f"cannot derive {derived_tf} from {source_tf}")
    if nominal_ms(derived_tf) % nominal_ms(source_tf) or source_tf == derived_tf:
        raise DerivationError(f"{source_tf} does not divide {derived_tf}")


def aggregate(
    source_candles: Iterable[Candle], derived_tf: str, *, now_ms: int | None = None
) -> list[Candle]:
    """Aggregate source candles into `derived_tf` candles, ascending by (symbol, ts).

    Duplicate source rows for one open time: the last one wins (as in a store batch).
    `now_ms` decides which periods have ended (wall clock when omitted).
    """
    now = wall_now_ms() if now_ms is None else now_ms
    latest: dict[tuple[str, int], Candle] = {}
    for candle in source_candles:
        _check_source(candle.timeframe, derived_tf)
        latest[(candle.symbol, candle.ts)] = candle
    periods: dict[tuple[str, int], list[Candle]] = {}
    for key in sorted(latest):
        candle = latest[key]
        periods.setdefault((candle.symbol, align(candle.ts, derived_tf)), []).append(candle)
    result: list[Candle] = []
    for (symbol, period_open), members in periods.items():
        ended = next_open(period_open, derived_tf) <= now
        result.append(
            Candle(
                symbol=symbol,
                timeframe=derived_tf,
                ts=period_open,
                open=members[0].open,
                high=max(c.high for c in members),
                low=min(c.low for c in members),
                close=members[-1].close,
                volume=math.fsum(c.volume for c in members),
                final=ended and all(c.final for c in members),
            )
        )
    result.sort(key=lambda c: (c.symbol, c.ts))
    return result


def derived_targets(derived: Iterable[SeriesKey], source: SeriesKey) -> list[str]:
    """The derived timeframes (among `derived`) built from this source series."""
    return sorted(
        {
            key.timeframe
            for key in derived
            if key.symbol == source.symbol and source_of(key.timeframe) == source.timeframe
        },
        key=nominal_ms,
    )


@dataclass(slots=True)
class DerivedStats:
    recomputes: int = 0
    source_rows_read: int = 0
    written: int = 0
    rejected: int = 0


DerivedWrite = Callable[[Sequence[Candle]], Awaitable[UpsertResult]]


class DerivedAggregator:
    """Reads stored source candles and writes the derived periods they cover through `write`
    (the sink's derived path: the sink is the one place candles are written).

    It never deletes: a derived row whose source rows vanished (retention) is left to retention.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        write: DerivedWrite,
        on_write: Callable[[UpsertResult], None] | None = None,
        universe: SeriesUniverse | None = None,
    ) -> None:
        self._store = store
        self._write = write
        self._settings = settings
        self._on_write = on_write
        # The universe's, so a pair listed while running gets its derived series too.
        self._universe = universe or SeriesUniverse.static(settings)
        self.stats = DerivedStats()

    @property
    def derived_series(self) -> frozenset[SeriesKey]:
        return self._universe.known_derived()

    def targets(self, source: SeriesKey) -> list[str]:
        return derived_targets(self._universe.known_derived(), source)

    async def recompute(
        self,
        series_source: SeriesKey,
        start_ms: int,
        end_ms: int,
        *,
        timeframes: Sequence[str] | None = None,
        now_ms: int | None = None,
    ) -> UpsertResult:
        """Rebuild every derived period overlapping [start_ms, end_ms) from the stored source.

        `timeframes` defaults to the configured derived timeframes of this source.
        """
        total = UpsertResult()
        wanted = list(timeframes) if timeframes is not None else self.targets(series_source)
        if end_ms <= start_ms or not wanted:
            return total
        now = wall_now_ms() if now_ms is None else now_ms
        floor = await self._source_floor(series_source, now)
        for derived_tf in wanted:
            _check_source(series_source.timeframe, derived_tf)
            start = max(align(start_ms, derived_tf), ceil_open(floor, derived_tf))
            if start >= end_ms:
                continue
            result = await self._recompute_one(series_source, derived_tf, start, end_ms, now_ms=now)
            total.written += result.written
            total.rejected.extend(result.rejected)
        self.stats.recomputes += 1
        self.stats.written += total.written
        self.stats.rejected += len(total.rejected)
        if self._on_write is not None:
            self._on_write(total)
        return total

    async def _source_floor(self, source: SeriesKey, now_ms: int) -> int:
        """Where the source's history may start (retention): a derived period that begins
        before it could be missing source rows that were purged, and rebuilding it would
        replace a complete derived candle with a partial one; such periods are left alone."""
        floor = 0
        retention = self._settings.retention_ms(source.timeframe)
        if retention is not None:
            floor = now_ms - retention
        horizon = await self._store.get_retention_horizon(source)
        return max(floor, horizon or 0)

    async def _recompute_one(
        self, source: SeriesKey, derived_tf: str, start_ms: int, end_ms: int, *, now_ms: int | None
    ) -> UpsertResult:
        total = UpsertResult()
        cursor = align(start_ms, derived_tf)
        stop = next_open(align(end_ms - 1, derived_tf), derived_tf)
        while cursor < stop:
            rows = await self._store.candles_in_range(source, cursor, stop, limit=READ_PAGE)
            self.stats.source_rows_read += len(rows)
            if not rows:
                break
            if len(rows) == READ_PAGE:
                # The page may end inside a period: keep whole periods only, read the rest next.
                cut = align(rows[-1].ts, derived_tf)
                if cut > cursor:
                    rows = [c for c in rows if c.ts < cut]
                    next_cursor = cut
                else:  # a single period holds more than a page: impossible for 2h..8h from 1h
                    raise DerivationError(f"{derived_tf} period at {cut} exceeds {READ_PAGE} rows")
            else:
                next_cursor = stop
            result = await self._write(aggregate(rows, derived_tf, now_ms=now_ms))
            total.written += result.written
            total.rejected.extend(result.rejected)
            cursor = next_cursor
        return total
