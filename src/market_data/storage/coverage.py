"""What the coverage view reads: per-series records, never candle rows (mixed into SqlStore).

Four small indexed reads on one connection: the series' stats row, its detector state row, and
its gap rows and empty ranges overlapping the window (each by its primary or unique key, which
starts with the series and then the range start). Written once in SQLAlchemy Core: nothing here
differs between the engines beyond the time column type, which `tables.EpochMs` handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from market_data.models import SeriesKey
from market_data.storage.base import CoverageRecords
from market_data.storage.core import SqlBase
from market_data.storage.tables import data_gaps, empty_ranges, series_state, series_stats

# Gap rows and empty ranges listed per request, each (a year of 1m with 1,000 holes is far below).
COVERAGE_LIST = 10_000


class CoverageMixin(SqlBase):
    async def coverage_records(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = COVERAGE_LIST
    ) -> CoverageRecords:
        limit = max(1, min(int(limit), COVERAGE_LIST))
        stats = sa.select(
            series_stats.c.first_ts, series_stats.c.last_ts, series_stats.c.candle_count
        ).where(self._series(series_stats, series))
        state = sa.select(series_state.c.detect_low, series_state.c.detect_watermark).where(
            self._series(series_state, series)
        )
        g = data_gaps.c
        gaps = (
            sa.select(g.gap_start, g.gap_end, g.status)
            .where(self._series(data_gaps, series), g.gap_start < end_ms, g.gap_end > start_ms)
            .order_by(g.gap_start)
            .limit(limit + 1)  # one more than kept: tells whether the list was cut
        )
        e = empty_ranges.c
        empties = (
            sa.select(e.range_start, e.range_end)
            .where(
                self._series(empty_ranges, series), e.range_start < end_ms, e.range_end > start_ms
            )
            .order_by(e.range_start)
            .limit(limit + 1)
        )
        async with self._read() as conn:
            stats_row = (await conn.execute(stats)).first()
            state_row = (await conn.execute(state)).first()
            gap_rows = (await conn.execute(gaps)).all()
            empty_rows = (await conn.execute(empties)).all()
        complete_until = _cut(gap_rows, limit, end_ms)
        complete_until = min(complete_until, _cut(empty_rows, limit, end_ms))
        first, last, count = stats_row if stats_row is not None else (None, None, 0)
        low, watermark = state_row if state_row is not None else (None, None)
        return CoverageRecords(
            first_ts=first,
            last_ts=last,
            candle_count=int(count or 0),
            detect_low=low,
            watermark=watermark,
            gaps=[(int(a), int(b), str(s)) for a, b, s in gap_rows[:limit]],
            empty=[(int(a), int(b)) for a, b in empty_rows[:limit]],
            complete_until=None if complete_until >= end_ms else complete_until,
        )

    async def empty_spans(self) -> dict[SeriesKey, int]:
        """Per series, the milliseconds of recorded empty ranges lying within its first and
        last candle (one grouped query over empty_ranges; for completeness figures)."""
        e, s = empty_ranges.c, series_stats.c
        length = self.dialect.epoch_ms(e.range_end) - self.dialect.epoch_ms(e.range_start)
        stmt = (
            sa.select(e.symbol, e.timeframe, sa.func.sum(length))
            .select_from(
                empty_ranges.join(
                    series_stats,
                    sa.and_(
                        s.exchange == e.exchange, s.symbol == e.symbol, s.timeframe == e.timeframe
                    ),
                )
            )
            .where(
                e.exchange == self.exchange, e.range_start >= s.first_ts, e.range_end <= s.last_ts
            )
            .group_by(e.symbol, e.timeframe)
        )
        async with self._read() as conn:
            return {
                SeriesKey(sym, tf): int(total or 0) for sym, tf, total in await conn.execute(stmt)
            }


def _cut(rows: Sequence[Sequence[Any]], limit: int, end_ms: int) -> int:
    """Where a listing of `limit` rows (ascending by start) stops being complete: the start of
    the first row left out, or `end_ms` when none was."""
    return int(rows[limit][0]) if len(rows) > limit else end_ms
