"""What the coverage view reads: per-series records, never candle rows (mixed into SqlStore).

The series' stats row and detector state row, and its gap rows and empty ranges overlapping the
window (each read by its primary or unique key, which starts with the series and then the range
start). Written once in SQLAlchemy Core; the one engine difference, turning a stored time into
epoch milliseconds inside SQL, is the dialect's `epoch_ms`.
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
        """Two round trips: the series' stats and detector state as one row of scalar
        subqueries, then its gap rows and empty ranges as one UNION ALL. Times come back as
        epoch-ms integers computed in SQL (`dialect.epoch_ms`), not as timestamps converted row
        by row in Python: on PostgreSQL that was most of the read's cost."""
        limit = max(1, min(int(limit), COVERAGE_LIST))
        ms = self.dialect.epoch_ms

        def one(column: Any, table: sa.Table) -> sa.ScalarSelect[Any]:
            return sa.select(column).where(self._series(table, series)).scalar_subquery()

        head = sa.select(
            one(ms(series_stats.c.first_ts), series_stats),
            one(ms(series_stats.c.last_ts), series_stats),
            one(series_stats.c.candle_count, series_stats),
            one(ms(series_state.c.detect_low), series_state),
            one(ms(series_state.c.detect_watermark), series_state),
        )
        g, e = data_gaps.c, empty_ranges.c
        gaps = (
            sa.select(
                sa.literal("g").label("kind"),
                ms(g.gap_start).label("a"),
                ms(g.gap_end).label("b"),
                g.status.label("status"),
            )
            .where(self._series(data_gaps, series), g.gap_start < end_ms, g.gap_end > start_ms)
            .order_by(g.gap_start)
            .limit(limit + 1)  # one more than kept: tells whether the list was cut
            .subquery()
        )
        empties = (
            sa.select(
                sa.literal("e").label("kind"),
                ms(e.range_start).label("a"),
                ms(e.range_end).label("b"),
                sa.literal("empty").label("status"),
            )
            .where(
                self._series(empty_ranges, series),
                e.range_start < end_ms,
                e.range_end > start_ms,
            )
            .order_by(e.range_start)
            .limit(limit + 1)
            .subquery()
        )
        rows = sa.union_all(sa.select(gaps), sa.select(empties))
        async with self._read() as conn:
            first, last, count, low, watermark = (await conn.execute(head)).one()
            listed = (await conn.execute(rows)).all()
        gap_rows = sorted((int(a), int(b), str(st)) for kind, a, b, st in listed if kind == "g")
        empty_rows = sorted((int(a), int(b)) for kind, a, b, _ in listed if kind == "e")
        complete_until = min(_cut(gap_rows, limit, end_ms), _cut(empty_rows, limit, end_ms))
        return CoverageRecords(
            first_ts=_int(first),
            last_ts=_int(last),
            candle_count=int(count or 0),
            detect_low=_int(low),
            watermark=_int(watermark),
            gaps=gap_rows[:limit],
            empty=empty_rows[:limit],
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


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
