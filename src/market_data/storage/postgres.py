"""PostgreSQL specifics: asyncpg fast paths, timestamptz times, advisory-locked migrations.

Small batches (WebSocket flushes) are one statement: `unnest` arrays -> upsert -> per-series
stats, all in one round trip. Bulk chunks (backfill pages) go by binary COPY: straight into
`candles` when the chunk's range holds no row yet (first-time history, the common case), else
into a temp staging table and one set-based upsert, which first drops (anti-join) the staged
rows the upsert would leave alone anyway: re-fetched history is mostly identical to what is
stored, and ON CONFLICT locks (so writes) every conflicting row even when its WHERE says no.
Times travel as epoch-ms bigints and become timestamptz in SQL, except on the straight COPY,
which needs datetimes.
Upserts report `xmax = 0` for inserted rows, which is how the stats count stays exact.
The temp table assumes session pooling (not a transaction-mode pgbouncer).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from market_data.gcpause import collector_paused
from market_data.models import SeriesKey
from market_data.storage.base import CandleColumns
from market_data.storage.batches import SeriesBatch
from market_data.storage.dialect import Dialect, HoleQuery, RawTransaction, Window, pool_options
from market_data.storage.dialect_time import ms_to_datetime
from market_data.storage.translate import is_unavailable

_fromtimestamp = datetime.fromtimestamp
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 300.0
_MIGRATION_LOCK = 0x6D61726B  # pg_advisory_xact_lock key: one migrating process at a time

_SET = """
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, final = EXCLUDED.final
WHERE (NOT c.final OR EXCLUDED.final)
  AND (c.open, c.high, c.low, c.close, c.volume, c.final)
      IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
       EXCLUDED.final)
"""
_STATS_SET = """
ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET
    candle_count = s.candle_count + EXCLUDED.candle_count,
    first_ts = LEAST(s.first_ts, EXCLUDED.first_ts),
    last_ts = GREATEST(s.last_ts, EXCLUDED.last_ts),
    last_final_ts = GREATEST(s.last_final_ts, EXCLUDED.last_final_ts)
"""
_COLUMNS = "exchange, symbol, timeframe, ts, open, high, low, close, volume, final"
_STATS_COLUMNS = "exchange, symbol, timeframe, candle_count, first_ts, last_ts, last_final_ts"

_SMALL = f"""
WITH up AS (
    INSERT INTO candles AS c ({_COLUMNS})
    SELECT $1, i.symbol, i.timeframe, to_timestamp(i.ts::float8 / 1000),
           i.open, i.high, i.low, i.close, i.volume, i.final
    FROM unnest($2::text[], $3::text[], $4::int8[], $5::float8[], $6::float8[], $7::float8[],
                $8::float8[], $9::float8[], $10::bool[])
         AS i(symbol, timeframe, ts, open, high, low, close, volume, final)
    ORDER BY i.symbol, i.timeframe, i.ts
    ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET {_SET}
    RETURNING c.symbol, c.timeframe, c.ts, c.final, (c.xmax = 0) AS inserted
), stats AS (
    INSERT INTO series_stats AS s ({_STATS_COLUMNS})
    SELECT $1, symbol, timeframe, count(*) FILTER (WHERE inserted),
           min(ts), max(ts), max(ts) FILTER (WHERE final)
    FROM up GROUP BY symbol, timeframe ORDER BY symbol, timeframe
    {_STATS_SET}
)
SELECT count(*) FROM up
"""
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS candles_stage (
    ts bigint, open float8, high float8, low float8, close float8, volume float8, final bool
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "final")
_FROM_STAGE = f"""
WITH up AS (
    INSERT INTO candles AS c ({_COLUMNS})
    SELECT $1, $2, $3, to_timestamp(i.ts::float8 / 1000),
           i.open, i.high, i.low, i.close, i.volume, i.final
    FROM candles_stage i
    WHERE NOT EXISTS (
        SELECT 1 FROM candles o
        WHERE o.exchange = $1 AND o.symbol = $2 AND o.timeframe = $3
          AND o.ts = to_timestamp(i.ts::float8 / 1000)
          AND (o.final AND NOT i.final
               OR (o.open, o.high, o.low, o.close, o.volume, o.final)
                  IS NOT DISTINCT FROM (i.open, i.high, i.low, i.close, i.volume, i.final))
    )
    ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET {_SET}
    RETURNING c.ts, c.final, (c.xmax = 0) AS inserted
), stats AS (
    INSERT INTO series_stats AS s ({_STATS_COLUMNS})
    SELECT $1, $2, $3, count(*) FILTER (WHERE inserted),
           min(ts), max(ts), max(ts) FILTER (WHERE final)
    FROM up HAVING count(*) > 0
    {_STATS_SET}
)
SELECT count(*) FROM up
"""
_ANY_IN_RANGE = """
SELECT EXISTS (
    SELECT 1 FROM candles
    WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
      AND ts >= to_timestamp($4::float8 / 1000) AND ts <= to_timestamp($5::float8 / 1000)
)
"""
_ADD_STATS = f"""
INSERT INTO series_stats AS s ({_STATS_COLUMNS})
VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000), to_timestamp($6::float8 / 1000),
        to_timestamp($7::float8 / 1000))
{_STATS_SET}
"""

# COPY takes no parameters. Times are ints we format ourselves; names of this shape need no
# escaping (asyncpg's server-side quoting, two more round trips, handles any other).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,64}$")
_READ_COLUMNS = """
SELECT ts, open, high, low, close, volume, final FROM candles
WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
  AND ts >= to_timestamp($4::float8 / 1000) AND ts < to_timestamp($5::float8 / 1000)
ORDER BY ts LIMIT $6
"""


def _inline(query: str, args: tuple[Any, ...]) -> str | None:
    """`query` with its $n replaced by literals, or None when an argument needs real quoting."""
    literals: list[str] = []
    for arg in args:
        if isinstance(arg, int):
            literals.append(str(int(arg)))
        elif isinstance(arg, str) and _PLAIN_NAME.match(arg):
            literals.append(f"'{arg}'")
        else:
            return None
    return re.sub(r"\$(\d+)\b", lambda m: literals[int(m.group(1)) - 1], query)


# PostgreSQL: every series in one statement, whatever their number: the requests travel as
# arrays and each one's window query runs as a LATERAL subquery over its primary-key range.
_HOLES = sa.text("""
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

_EMPTY_RANGES = sa.text("""
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

# float8::text is the shortest exact form (PostgreSQL 12+); times are whole minutes.
_CANDLE_JSON = (
    """'{"ts":"' || replace((c.ts AT TIME ZONE 'UTC')::text, ' ', 'T')"""
    """ || 'Z","open":' || c.open::text || ',"high":' || c.high::text"""
    """ || ',"low":' || c.low::text || ',"close":' || c.close::text"""
    """ || ',"volume":' || c.volume::text"""
    """ || CASE WHEN c.final THEN ',"final":true}' ELSE ',"final":false}' END"""
)


class PostgresDialect(Dialect):
    name = "postgresql"
    bulk_chunk_rows = 50_000
    small_is_one_statement = True
    small_max_rows = 50_000

    def __init__(self, url: str, exchange: str) -> None:
        super().__init__(url, exchange)
        self._staged: weakref.WeakSet[Any] = weakref.WeakSet()
        self._read_engine: AsyncEngine | None = None
        self._read_base: AsyncEngine | None = None

    def create_engine(self, pool_size: int | None = None, pre_ping: bool = False) -> AsyncEngine:
        return create_async_engine(
            self.url,
            **pool_options(pool_size, pre_ping, {"pool_size": 5, "max_overflow": 10}),
            pool_recycle=1800,
            connect_args={
                "timeout": CONNECT_TIMEOUT_S,
                "command_timeout": COMMAND_TIMEOUT_S,
                "server_settings": {"application_name": "market-data"},
            },
        )

    def read_engine(self, engine: AsyncEngine) -> AsyncEngine:
        # Autocommit saves the BEGIN and ROLLBACK round trips around every read.
        if self._read_engine is None or self._read_base is not engine:
            self._read_base = engine
            self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        return self._read_engine

    def write_lock(self) -> AbstractAsyncContextManager[object]:
        return nullcontext()

    @asynccontextmanager
    async def raw_transaction(
        self, engine: AsyncEngine, *, single_statement: bool = False
    ) -> AsyncIterator[Any]:
        # SQLAlchemy's asyncpg adapter opens its transaction lazily, on its own first
        # statement; talking to the driver directly, we open ours.
        async with engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            try:
                if single_statement:
                    yield raw
                else:
                    async with raw.transaction():
                        yield raw
            except BaseException as exc:
                # SQLAlchemy never saw this error. A server-side refusal leaves the connection
                # usable; anything else (lost, timed out, cancelled mid-protocol) may not.
                if not isinstance(exc, asyncpg.PostgresError) or is_unavailable(exc):
                    await conn.invalidate()
                raise

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def greatest(self, a: Any, b: Any) -> sa.ColumnElement[Any]:
        return sa.func.greatest(a, b)

    def epoch_ms(self, column: Any) -> sa.ColumnElement[int]:
        return sa.cast(sa.extract("epoch", column) * 1000, sa.BigInteger)

    def clock(self, plus_ms: int = 0) -> sa.ColumnElement[Any]:
        # clock_timestamp(), not now(): the time of the statement, not of its transaction.
        now = sa.func.clock_timestamp()
        return now + sa.literal(timedelta(milliseconds=plus_ms), sa.Interval) if plus_ms else now

    def lock_rows(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update()

    def skip_locked(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update(skip_locked=True)

    async def prepare_migration(self, conn: AsyncConnection) -> None:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))

    async def read_columns(
        self, engine: AsyncEngine, series: SeriesKey, start_ms: int, end_ms: int, limit: int
    ) -> CandleColumns:
        # Binary COPY: the server sends fixed-width rows that numpy reads in place, with no
        # Python object per row or value (several times the rate of fetching records). numpy
        # is imported by the bulk reads only, not with the daemon.
        from market_data.storage.columns import from_pg_binary

        args = (self.exchange, series.symbol, series.timeframe, start_ms, end_ms, limit)
        data = bytearray()

        async def sink(chunk: bytes) -> None:
            data.extend(chunk)

        query = _inline(_READ_COLUMNS, args)
        async with self.read_engine(engine).connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            try:
                if query is None:
                    await raw.copy_from_query(_READ_COLUMNS, *args, output=sink, format="binary")
                else:
                    await raw.copy_from_query(query, output=sink, format="binary")
            except BaseException as exc:
                # SQLAlchemy never saw this error (see raw_transaction).
                if not isinstance(exc, asyncpg.PostgresError) or is_unavailable(exc):
                    await conn.invalidate()
                raise
        return from_pg_binary(series, data)

    async def write_small(self, raw: Any, batches: list[SeriesBatch]) -> int:
        rows = [row for batch in batches for row in batch.rows]
        columns = list(zip(*rows, strict=True))[1:]  # symbol, timeframe, ts, ..., final
        return int(await raw.fetchval(_SMALL, self.exchange, *columns))

    async def write_bulk(self, transaction: RawTransaction, batch: SeriesBatch) -> int:
        key = (self.exchange, batch.symbol, batch.timeframe)
        async with transaction() as raw:
            occupied = await raw.fetchval(_ANY_IN_RANGE, *key, batch.first_ts, batch.last_ts)
            if not occupied:
                try:
                    return await self._copy_straight(raw, batch)
                except asyncpg.exceptions.UniqueViolationError:
                    pass  # someone wrote into the range since we looked: upsert instead
            return await self._upsert_staged(raw, batch)

    async def _copy_straight(self, raw: Any, batch: SeriesBatch) -> int:
        ex, sym, tf = self.exchange, batch.symbol, batch.timeframe
        # COPY cannot convert: times go as datetimes. fromtimestamp(ms / 1000) is exact for
        # epoch ms (the float error is far below the microsecond it rounds to) and 2x faster
        # than adding a timedelta.
        with collector_paused():  # one record per row, none cyclic (see gcpause)
            records = [(ex, sym, tf, _fromtimestamp(r[3] / 1000, UTC), *r[4:]) for r in batch.rows]
        async with raw.transaction():  # a savepoint: a conflict must not poison the outer one
            await raw.copy_records_to_table("candles", records=records)
        await raw.execute(
            _ADD_STATS,
            ex,
            sym,
            tf,
            len(records),
            batch.first_ts,
            batch.last_ts,
            batch.last_final_ts,
        )
        return len(records)

    async def _upsert_staged(self, raw: Any, batch: SeriesBatch) -> int:
        if raw not in self._staged:
            await raw.execute(_STAGE)
            self._staged.add(raw)
        records = [r[3:] for r in batch.rows]
        await raw.copy_records_to_table("candles_stage", records=records, columns=_STAGE_COLUMNS)
        return int(await raw.fetchval(_FROM_STAGE, self.exchange, batch.symbol, batch.timeframe))

    # -- the gap detector's reads: every series in one statement, whatever their number ---------

    async def find_holes(
        self, conn: AsyncConnection, queries: Sequence[HoleQuery]
    ) -> list[tuple[SeriesKey, int, int]]:
        rows = await conn.execute(
            _HOLES,
            {
                "exchange": self.exchange,
                "symbols": [q[0].symbol for q in queries],
                "timeframes": [q[0].timeframe for q in queries],
                "starts": [ms_to_datetime(q[1]) for q in queries],
                "ends": [ms_to_datetime(q[2]) for q in queries],
                "steps": [q[3] for q in queries],
            },
        )
        return [(SeriesKey(sym, tf), int(prev), int(ts)) for sym, tf, prev, ts in rows]

    async def find_empty_ranges(
        self, conn: AsyncConnection, windows: Sequence[Window], limit: int
    ) -> list[tuple[SeriesKey, int, int]]:
        rows = await conn.execute(
            _EMPTY_RANGES,
            {
                "exchange": self.exchange,
                "symbols": [w[0].symbol for w in windows],
                "timeframes": [w[0].timeframe for w in windows],
                "starts": [ms_to_datetime(w[1]) for w in windows],
                "ends": [ms_to_datetime(w[2]) for w in windows],
                "limit": limit,
            },
        )
        return [(SeriesKey(sym, tf), int(start), int(end)) for sym, tf, start, end in rows]

    # -- the API's fast path ---------------------------------------------------------------------

    def candles_json(self, rows: sa.Subquery) -> sa.Executable | None:
        # The API's 10,000-row answers then cost about what the query does.
        obj: sa.ColumnElement[str] = sa.literal_column(_CANDLE_JSON)
        return sa.select(
            sa.func.coalesce(
                sa.func.string_agg(obj, aggregate_order_by(sa.literal(","), rows.c.ts)), ""
            ),
            sa.func.count(),
            sa.func.max(rows.c.ts),
        ).select_from(rows)
