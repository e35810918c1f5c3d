"""The gap detector's queries, many series per statement, so a cycle's cost is a few round trips
whatever the number of series (mixed into SqlStore).

Holes are found with one window query per series (LAG over its primary-key range). The comparison
runs on the stored column type (timestamptz arithmetic on PostgreSQL, integers on SQLite); only the
hole rows are converted to epoch ms. Plain SQL text: these run every cycle, and building and
compiling a statement per series would cost more than running it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from market_data.models import Gap, GapStatus, SeriesKey
from market_data.storage.core import SqlBase
from market_data.storage.records import MAX_LIST, _gap
from market_data.storage.tables import data_gaps, ms_to_datetime, series_state

# (series, first ts, last ts, period length): look for holes among stored ts in [first, last].
HoleQuery = tuple[SeriesKey, int, int, int]


# PostgreSQL: every series in one statement, whatever their number: the requests travel as
# arrays and each one's window query runs as a LATERAL subquery over its primary-key range.
_HOLES_PG = sa.text("""
SELECT r.symbol, r.timeframe,
       CAST(extract(epoch FROM w.prev) * 1000 AS bigint) AS prev,
       CAST(extract(epoch FROM w.ts) * 1000 AS bigint) AS ts
FROM unnest(CAST(:symbols AS text[]), CAST(:timeframes AS text[]),
            CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]),
            CAST(:steps AS bigint[])) AS r(symbol, timeframe, lo, hi, step)
CROSS JOIN LATERAL (
    SELECT c.ts, lag(c.ts) OVER (ORDER BY c.ts) AS prev
    FROM candles c
    WHERE c.exchange = :exchange AND c.symbol = r.symbol AND c.timeframe = r.timeframe
      AND c.ts >= r.lo AND c.ts <= r.hi
) w
WHERE w.ts > w.prev + r.step * interval '1 millisecond'
""")

# SQLite: up to _SQLITE_BRANCHES series per statement, joined with UNION ALL.
_SQLITE_BRANCH = """
SELECT {n} AS q, prev, ts FROM (
    SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev FROM candles
    WHERE exchange = :exchange AND symbol = :s{n} AND timeframe = :t{n}
      AND ts >= :a{n} AND ts <= :b{n})
WHERE ts - prev > :d{n}
"""
_SQLITE_BRANCHES = 100  # 5 parameters each, well under SQLite's limit per statement
_SERIES_PER_STATEMENT = 100  # series per statement of the other bulk reads and writes
_GAP_ROWS = 500  # gap rows per INSERT


def _sqlite_holes(count: int) -> sa.TextClause:
    return sa.text(" UNION ALL ".join(_SQLITE_BRANCH.format(n=n) for n in range(count)))


_EMPTY_PG = sa.text("""
SELECT e.symbol, e.timeframe,
       CAST(extract(epoch FROM e.range_start) * 1000 AS bigint),
       CAST(extract(epoch FROM e.range_end) * 1000 AS bigint)
FROM unnest(CAST(:symbols AS text[]), CAST(:timeframes AS text[]),
            CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
     AS r(symbol, timeframe, lo, hi)
JOIN empty_ranges e ON e.exchange = :exchange AND e.symbol = r.symbol
     AND e.timeframe = r.timeframe AND e.range_start < r.hi AND e.range_end > r.lo
ORDER BY e.symbol, e.timeframe, e.range_start
LIMIT :limit
""")

_EMPTY_SQLITE_BRANCH = """
SELECT symbol, timeframe, range_start, range_end FROM empty_ranges
WHERE exchange = :exchange AND symbol = :s{n} AND timeframe = :t{n}
  AND range_start < :b{n} AND range_end > :a{n}
"""


def _empty_sqlite(count: int) -> sa.TextClause:
    branches = " UNION ALL ".join(_EMPTY_SQLITE_BRANCH.format(n=n) for n in range(count))
    return sa.text(f"SELECT * FROM ({branches}) ORDER BY 1, 2, 3 LIMIT :limit")


class DetectionMixin(SqlBase):
    async def find_missing_ranges_many(
        self, queries: Sequence[HoleQuery]
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """`find_missing_ranges` for many series at once: series -> holes, ascending."""
        steps = {q[0]: q[3] for q in queries}
        found: dict[SeriesKey, list[tuple[int, int]]] = {}
        if not queries:
            return found
        async with self._read() as conn:
            if self.dialect.name == "postgresql":
                rows = await conn.execute(_HOLES_PG, {
                    "exchange": self.exchange,
                    "symbols": [q[0].symbol for q in queries],
                    "timeframes": [q[0].timeframe for q in queries],
                    "starts": [ms_to_datetime(q[1]) for q in queries],
                    "ends": [ms_to_datetime(q[2]) for q in queries],
                    "steps": [q[3] for q in queries],
                })
                for symbol, timeframe, prev, ts in rows:
                    key = SeriesKey(symbol, timeframe)
                    found.setdefault(key, []).append((int(prev) + steps[key], int(ts)))
            else:
                for i in range(0, len(queries), _SQLITE_BRANCHES):
                    chunk = queries[i : i + _SQLITE_BRANCHES]
                    params: dict[str, object] = {"exchange": self.exchange}
                    for n, (series, start, end, step) in enumerate(chunk):
                        params.update({f"s{n}": series.symbol, f"t{n}": series.timeframe,
                                       f"a{n}": start, f"b{n}": end, f"d{n}": step})
                    for n, prev, ts in await conn.execute(_sqlite_holes(len(chunk)), params):
                        series, _, _, step = chunk[n]
                        found.setdefault(series, []).append((int(prev) + step, int(ts)))
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
            {"exchange": self.exchange, "symbol": key.symbol, "timeframe": key.timeframe,
             "detect_low": low, "detect_watermark": high}
            for key, (low, high) in states.items()
        ]
        if not rows:
            return
        stmt = self.dialect.insert(series_state)
        stmt = stmt.on_conflict_do_update(
            index_elements=["exchange", "symbol", "timeframe"],
            set_={"detect_low": stmt.excluded.detect_low,
                  "detect_watermark": stmt.excluded.detect_watermark},
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
                chunk = items[i : i + _SERIES_PER_STATEMENT]
                if self.dialect.name == "postgresql":
                    stmt, params = _EMPTY_PG, {
                        "symbols": [k.symbol for k, _ in chunk],
                        "timeframes": [k.timeframe for k, _ in chunk],
                        "starts": [ms_to_datetime(w[0]) for _, w in chunk],
                        "ends": [ms_to_datetime(w[1]) for _, w in chunk],
                    }
                else:
                    stmt, params = _empty_sqlite(len(chunk)), {}
                    for n, (key, (start, end)) in enumerate(chunk):
                        params.update({f"s{n}": key.symbol, f"t{n}": key.timeframe,
                                       f"a{n}": start, f"b{n}": end})
                params.update(exchange=self.exchange, limit=MAX_LIST * len(chunk))
                for sym, tf, start, end in await conn.execute(stmt, params):
                    result.setdefault(SeriesKey(sym, tf), []).append((int(start), int(end)))
        return result

    async def create_gaps_many(
        self, ranges: Mapping[SeriesKey, Sequence[tuple[int, int]]]
    ) -> list[Gap]:
        """`create_gaps` for many series in one transaction; the gaps created."""
        now = self._clock()
        rows = [
            {
                "exchange": self.exchange, "symbol": key.symbol, "timeframe": key.timeframe,
                "gap_start": start, "gap_end": end, "detected_at": now,
                "status": GapStatus.OPEN.value, "candles_repaired": 0, "attempts": 0,
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
