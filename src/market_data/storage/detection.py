"""The gap detector's queries, many series per statement, so a cycle's cost is a few round trips
whatever the number of series (mixed into SqlStore).

Holes are found with one window query per series (LAG over its primary-key range). The comparison
runs on the stored column type (timestamptz arithmetic on PostgreSQL, integers on SQLite); only the
hole rows are converted to epoch ms. Those statements differ per engine and live in the dialects
(`Dialect.find_holes`, `Dialect.find_empty_ranges`, plain SQL text: they run every cycle, and
building and compiling a statement per series would cost more than running it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from market_data.models import Gap, GapStatus, SeriesKey
from market_data.storage.core import SqlBase
from market_data.storage.dialect import HoleQuery
from market_data.storage.records import MAX_LIST, _gap
from market_data.storage.tables import data_gaps, series_state

_SERIES_PER_STATEMENT = 100  # series per statement of the other bulk reads and writes
_GAP_ROWS = 500  # gap rows per INSERT


class DetectionMixin(SqlBase):
    async def find_missing_ranges_many(
        self, queries: Sequence[HoleQuery]
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """See GapStore.find_missing_ranges_many: series -> holes, ascending."""
        steps = {q[0]: q[3] for q in queries}
        found: dict[SeriesKey, list[tuple[int, int]]] = {}
        if not queries:
            return found
        async with self._read() as conn:
            for series, prev, ts in await self.dialect.find_holes(conn, queries):
                found.setdefault(series, []).append((prev + steps[series], ts))
        for holes in found.values():
            holes.sort()
        return found

    async def scan_states(self) -> dict[SeriesKey, tuple[int | None, int | None, int | None]]:
        """Every series' (detect_low, watermark, retention horizon), in one query."""
        t = series_state
        stmt = sa.select(
            t.c.symbol, t.c.timeframe, t.c.detect_low, t.c.detect_watermark, t.c.retention_horizon
        ).where(t.c.exchange == self.exchange)
        async with self._read() as conn:
            return {
                SeriesKey(sym, tf): (low, high, horizon)
                for sym, tf, low, high, horizon in await conn.execute(stmt)
            }

    async def set_scan_states(self, states: Mapping[SeriesKey, tuple[int, int]]) -> None:
        """Record (detect_low, watermark) for many series in one transaction."""
        rows = [
            {
                "exchange": self.exchange,
                "symbol": key.symbol,
                "timeframe": key.timeframe,
                "detect_low": low,
                "detect_watermark": high,
            }
            for key, (low, high) in states.items()
        ]
        if not rows:
            return
        stmt = self.dialect.insert(series_state)
        stmt = stmt.on_conflict_do_update(
            index_elements=["exchange", "symbol", "timeframe"],
            set_={
                "detect_low": stmt.excluded.detect_low,
                "detect_watermark": stmt.excluded.detect_watermark,
            },
        )
        async with self._write() as conn:
            # One statement, many parameter sets: compiled once, cached, sent as a batch.
            await conn.execute(stmt, rows)

    async def empty_ranges_many(
        self, windows: Mapping[SeriesKey, tuple[int, int]]
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """`empty_ranges` for many series (series -> [start, end) window) in few queries;
        at most 10,000 ranges per series."""
        result: dict[SeriesKey, list[tuple[int, int]]] = {}
        items = list(windows.items())
        async with self._read() as conn:
            for i in range(0, len(items), _SERIES_PER_STATEMENT):
                part = items[i : i + _SERIES_PER_STATEMENT]
                chunk = [(key, start, end) for key, (start, end) in part]
                found = await self.dialect.find_empty_ranges(conn, chunk, MAX_LIST * len(chunk))
                for key, start, end in found:
                    result.setdefault(key, []).append((start, end))
        return result

    async def create_gaps_many(
        self, ranges: Mapping[SeriesKey, Sequence[tuple[int, int]]]
    ) -> list[Gap]:
        """`create_gaps` for many series in one transaction; the gaps created."""
        now = self._clock()
        rows = [
            {
                "exchange": self.exchange,
                "symbol": key.symbol,
                "timeframe": key.timeframe,
                "gap_start": start,
                "gap_end": end,
                "detected_at": now,
                "status": GapStatus.OPEN.value,
                "candles_repaired": 0,
                "attempts": 0,
            }
            for key, found in ranges.items()
            for start, end in dict(found).items()  # one range per start: the unique key
            if end > start
        ]
        created: list[Gap] = []
        if not rows:
            return created
        stmt = (
            self.dialect.insert(data_gaps)
            .on_conflict_do_nothing(index_elements=["exchange", "symbol", "timeframe", "gap_start"])
            .returning(*data_gaps.c)
        )
        async with self._write() as conn:
            for i in range(0, len(rows), _GAP_ROWS):
                # One statement, many parameter sets: compiled once and cached, sent in batches.
                created += [_gap(row) for row in await conn.execute(stmt, rows[i : i + _GAP_ROWS])]
        return sorted(created, key=lambda g: (g.symbol, g.timeframe, g.gap_start))
