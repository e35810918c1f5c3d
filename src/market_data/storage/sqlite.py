"""SQLite specifics: WAL, one writer, raw-driver executemany upserts, manual WAL checkpoints.

Times are INTEGER epoch ms. Every connection runs in WAL mode with synchronous=NORMAL and a 5 s
busy timeout. The driver's implicit transactions are off; we emit BEGIN ourselves, IMMEDIATE
for writes (so a write never fails halfway on a lock upgrade); reads are single statements.
Automatic WAL checkpoints are off because they land inside whichever commit crosses the
threshold (the p99 of small flushes); `checkpoint()` runs them instead: the daemon calls it
periodically, and the store itself after large writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from market_data.errors import StorageError
from market_data.models import SeriesKey
from market_data.storage.base import CandleColumns
from market_data.storage.batches import SeriesBatch
from market_data.storage.dialect import Dialect, HoleQuery, RawTransaction, Window, pool_options
from market_data.storage.translate import is_unavailable

BUSY_TIMEOUT_MS = 5_000
# Fold the WAL into the database once this many rows were written since the last checkpoint,
# even if nobody calls checkpoint() (keeps the WAL file bounded).
CHECKPOINT_EVERY_ROWS = 100_000
WRITE_OPTION = "market_data_write"
ADBC_MAX_BATCH_ROWS = 65_536

_UPSERT = """
INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume, final)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, final = excluded.final
WHERE (NOT candles.final OR excluded.final)
  AND (candles.open, candles.high, candles.low, candles.close, candles.volume, candles.final)
      IS NOT (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume,
              excluded.final)
"""
_STATS = """
INSERT INTO series_stats AS s
    (exchange, symbol, timeframe, candle_count, first_ts, last_ts, last_final_ts)
VALUES {values}
ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET
    candle_count = s.candle_count + excluded.candle_count,
    first_ts = min(coalesce(s.first_ts, excluded.first_ts), excluded.first_ts),
    last_ts = max(coalesce(s.last_ts, excluded.last_ts), excluded.last_ts),
    last_final_ts = max(coalesce(s.last_final_ts, excluded.last_final_ts),
                        coalesce(excluded.last_final_ts, s.last_final_ts))
"""
_COUNT_RANGE = """
SELECT count(*) FROM candles
WHERE exchange = ? AND symbol = ? AND timeframe = ? AND ts >= ? AND ts <= ?
"""
# A join (not a row-value IN, which SQLite answers with a scan) probes the key per row; three
# parameters per key stays far below SQLite's 32766 limit for the small batches this serves.
_COUNT_KEYS = """
SELECT k.column1, k.column2, count(*)
FROM (VALUES {values}) AS k
JOIN candles AS c
  ON c.exchange = ? AND c.symbol = k.column1 AND c.timeframe = k.column2 AND c.ts = k.column3
GROUP BY k.column1, k.column2
"""
_READ_COLUMNS = """
SELECT ts, open, high, low, close, volume, final FROM candles
WHERE exchange = ? AND symbol = ? AND timeframe = ? AND ts >= ? AND ts < ?
ORDER BY ts LIMIT ?
"""


def _read_columns(path: str, params: tuple[Any, ...], series: SeriesKey) -> CandleColumns:
    """One chunk through the ADBC SQLite driver, which steps the statement in C straight into
    Arrow arrays: 3x the rate of the sqlite3 module, which builds a tuple per row. Read-only,
    autocommit (no snapshot held), on a connection of its own (a file open, under 1 ms)."""
    # Imported here, by the bulk reads (exports, CSV answers), not by the daemon: the driver
    # brings Arrow (and pandas or polars when installed) into the process.
    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    from market_data.storage.columns import from_arrow

    try:
        uri = f"file:{quote(path)}?mode=ro"
        with adbc_sqlite.connect(uri, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # One Arrow batch per chunk rather than the driver's 1,024-row default (~20% faster).
            rows = str(max(1, min(int(params[-1]), ADBC_MAX_BATCH_ROWS)))
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": rows})
            cursor.execute(_READ_COLUMNS, params)
            table = cursor.fetch_arrow_table()
    except adbc_driver_manager.Error as exc:
        # As the sqlite3 module would raise it, so the one translation applies.
        raise sqlite3.OperationalError(str(exc)) from None
    return from_arrow(series, table)


# SQLite: up to _BRANCHES series per statement, joined with UNION ALL.
_HOLES_BRANCH = """
SELECT {n} AS q, prev, ts FROM (
    SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev FROM candles
    WHERE exchange = :exchange AND symbol = :s{n} AND timeframe = :t{n}
      AND ts >= :a{n} AND ts <= :b{n})
WHERE ts - prev > :d{n}
"""
_BRANCHES = 100  # 5 parameters each, well under SQLite's limit per statement


def _holes(count: int) -> sa.TextClause:
    return sa.text(" UNION ALL ".join(_HOLES_BRANCH.format(n=n) for n in range(count)))


_EMPTY_BRANCH = """
SELECT symbol, timeframe, range_start, range_end FROM empty_ranges
WHERE exchange = :exchange AND symbol = :s{n} AND timeframe = :t{n}
  AND range_start < :b{n} AND range_end > :a{n}
"""


def _empty_ranges(count: int) -> sa.TextClause:
    branches = " UNION ALL ".join(_EMPTY_BRANCH.format(n=n) for n in range(count))
    return sa.text(f"SELECT * FROM ({branches}) ORDER BY 1, 2, 3 LIMIT :limit")


async def _add_stats(raw: Any, stats: list[tuple[Any, ...]]) -> None:
    """Fold per-series deltas (exchange, symbol, timeframe, new rows, first, last, last final)
    into series_stats: one statement per 1,000 series (7 parameters each)."""
    for i in range(0, len(stats), 1_000):
        part = stats[i : i + 1_000]
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(part))
        await raw.execute_fetchall(_STATS.format(values=values), [v for s in part for v in s])


def _enter_wal(cursor: Any) -> None:
    """Switch the file to WAL (a persistent mode: a no-op once any connection did it).

    The switch needs the file to itself, and SQLite answers "database is locked" at once rather
    than through the busy handler when two new connections race for it (several processes or
    stores opening a fresh file): retried here for up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            # Runs inside SQLAlchemy's greenlet: wait on the event loop, not by blocking it.
            await_only(asyncio.sleep(0.01))


class SqliteDialect(Dialect):
    name = "sqlite"
    bulk_chunk_rows = 5_000

    def __init__(self, url: str, exchange: str) -> None:
        super().__init__(url, exchange)
        self._lock = asyncio.Lock()
        self._rows_since_checkpoint = 0
        self._checkpointing = asyncio.Lock()
        self.last_checkpoint_s: float | None = None
        self._write_engine: AsyncEngine | None = None
        self._write_base: AsyncEngine | None = None

    def create_engine(self, pool_size: int | None = None, pre_ping: bool = False) -> AsyncEngine:
        # No reset-on-return: every transaction is committed or rolled back by SQLAlchemy
        # itself (we emit BEGIN through it), so the pool's extra ROLLBACK is a wasted hop.
        default = {"pool_size": 5, "max_overflow": 5, "pool_timeout": 30}
        pool = pool_options(pool_size, pre_ping, default)
        engine = create_async_engine(self.url, pool_reset_on_return=None, **pool)

        @event.listens_for(engine.sync_engine, "connect")
        def _configure(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            # We emit BEGIN ourselves (below); the driver's own would be deferred and late.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enter_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            # Reads are single statements, each consistent on its own: no BEGIN needed.
            if conn.get_execution_options().get(WRITE_OPTION, False):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def write_engine(self, engine: AsyncEngine) -> AsyncEngine:
        if self._write_engine is None or self._write_base is not engine:
            self._write_base = engine
            self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        return self._write_engine

    def write_lock(self) -> AbstractAsyncContextManager[object]:
        return self._lock

    @asynccontextmanager
    async def raw_transaction(
        self, engine: AsyncEngine, *, single_statement: bool = False
    ) -> AsyncIterator[Any]:
        async with self.write_engine(engine).begin() as conn:
            try:
                yield (await conn.get_raw_connection()).driver_connection
            except BaseException as exc:
                # SQLAlchemy never saw this error: tell the pool when the connection is gone.
                if is_unavailable(exc):
                    await conn.invalidate()
                raise

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def greatest(self, a: Any, b: Any) -> sa.ColumnElement[Any]:
        return sa.func.max(a, b)

    def epoch_ms(self, column: Any) -> sa.ColumnElement[int]:
        return sa.type_coerce(column, sa.BigInteger)

    def clock(self, plus_ms: int = 0) -> sa.ColumnElement[Any]:
        # This machine's clock (one daemon per file), as epoch ms like every stored time.
        now = sa.cast(
            sa.func.round((sa.func.julianday("now") - 2440587.5) * 86_400_000.0), sa.Integer
        )
        return now + plus_ms if plus_ms else now

    async def write_small(self, raw: Any, batches: list[SeriesBatch]) -> int:
        rows = [row for batch in batches for row in batch.rows]
        keys: list[Any] = []
        for row in rows:
            keys += row[1:4]  # symbol, timeframe, ts
        values = ",".join(["(?, ?, ?)"] * len(rows))
        keys.append(self.exchange)
        found = await raw.execute_fetchall(_COUNT_KEYS.format(values=values), keys)
        existing = {(s, t): n for s, t, n in found}
        async with raw.executemany(_UPSERT, rows) as cursor:
            written = int(cursor.rowcount)
        await _add_stats(
            raw,
            [
                (
                    self.exchange,
                    b.symbol,
                    b.timeframe,
                    len(b.rows) - existing.get((b.symbol, b.timeframe), 0),
                    b.first_ts,
                    b.last_ts,
                    b.last_final_ts,
                )
                for b in batches
            ],
        )
        self._rows_since_checkpoint += len(rows)
        return written

    async def write_bulk(self, transaction: RawTransaction, batch: SeriesBatch) -> int:
        # The chunk is one series, ascending: counting its ts range before and after the upsert
        # (two short index range scans) gives the number of new rows exactly.
        bounds = (self.exchange, batch.symbol, batch.timeframe, batch.first_ts, batch.last_ts)
        async with transaction() as raw:
            [(before,)] = await raw.execute_fetchall(_COUNT_RANGE, bounds)
            async with raw.executemany(_UPSERT, batch.rows) as cursor:
                written = int(cursor.rowcount)
            if before == 0:  # nothing was there (and we hold the write lock): all rows are new
                new = len(batch.rows)
            else:
                [(after,)] = await raw.execute_fetchall(_COUNT_RANGE, bounds)
                new = after - before
            await _add_stats(
                raw, [(*bounds[:3], new, batch.first_ts, batch.last_ts, batch.last_final_ts)]
            )
        self._rows_since_checkpoint += len(batch.rows)
        return written

    async def read_columns(
        self, engine: AsyncEngine, series: SeriesKey, start_ms: int, end_ms: int, limit: int
    ) -> CandleColumns:
        path = make_url(self.url).database or ""
        params = (self.exchange, series.symbol, series.timeframe, start_ms, end_ms, limit)
        return await asyncio.to_thread(_read_columns, path, params, series)

    async def after_write(self, engine: AsyncEngine, rows: int) -> None:
        if self._rows_since_checkpoint >= CHECKPOINT_EVERY_ROWS:
            await self.checkpoint(engine)

    async def checkpoint(self, engine: AsyncEngine) -> None:
        # PASSIVE never waits for readers or writers; what it cannot fold now, the next one will.
        if self._checkpointing.locked():
            return
        async with self._checkpointing, engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            self._rows_since_checkpoint = 0
            async with raw.execute("PRAGMA wal_checkpoint(PASSIVE)"):
                pass
            self.last_checkpoint_s = time.monotonic()

    def prepare_location(self, target: str) -> None:
        try:
            Path(target).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StorageError(f"database {target} cannot be created: {reason}") from None

    # -- the gap detector's reads: up to _BRANCHES series per statement, joined by UNION ALL ----

    async def find_holes(
        self, conn: AsyncConnection, queries: Sequence[HoleQuery]
    ) -> list[tuple[SeriesKey, int, int]]:
        found: list[tuple[SeriesKey, int, int]] = []
        for i in range(0, len(queries), _BRANCHES):
            chunk = queries[i : i + _BRANCHES]
            params: dict[str, object] = {"exchange": self.exchange}
            for n, (series, start, end, step) in enumerate(chunk):
                params.update(
                    {
                        f"s{n}": series.symbol,
                        f"t{n}": series.timeframe,
                        f"a{n}": start,
                        f"b{n}": end,
                        f"d{n}": step,
                    }
                )
            for n, prev, ts in await conn.execute(_holes(len(chunk)), params):
                found.append((chunk[n][0], int(prev), int(ts)))
        return found

    async def find_empty_ranges(
        self, conn: AsyncConnection, windows: Sequence[Window], limit: int
    ) -> list[tuple[SeriesKey, int, int]]:
        params: dict[str, object] = {"exchange": self.exchange, "limit": limit}
        for n, (key, start, end) in enumerate(windows):
            params.update(
                {f"s{n}": key.symbol, f"t{n}": key.timeframe, f"a{n}": start, f"b{n}": end}
            )
        rows = await conn.execute(_empty_ranges(len(windows)), params)
        return [(SeriesKey(sym, tf), int(start), int(end)) for sym, tf, start, end in rows]
