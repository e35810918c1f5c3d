"""Where SQLite and PostgreSQL differ. Everything engine-specific lives behind this interface
(`sqlite.py`, `postgres.py`, picked for a URL by `registry.py`); the store itself (`sql.py`,
`records.py`, `detection.py`) is written once for both. The one exception is how a time is
stored, which the column type `tables.EpochMs` decides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from market_data.models import SeriesKey
from market_data.storage.base import CandleColumns
from market_data.storage.batches import SeriesBatch

# A locked, error-translating transaction on the raw driver connection (see SqlBase._raw_write).
RawTransaction = Callable[[], AbstractAsyncContextManager[Any]]

CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "final")

# (series, first ts, last ts, period length): look for holes among stored ts in [first, last].
HoleQuery = tuple[SeriesKey, int, int, int]
# (series, start, end): a [start, end) window of one series.
Window = tuple[SeriesKey, int, int]


class Dialect(ABC):
    name: ClassVar[str]
    # Rows per transaction on the bulk path (the engines' measured sweet spots).
    bulk_chunk_rows: ClassVar[int]

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange

    @abstractmethod
    def create_engine(self, pool_size: int | None = None, pre_ping: bool = False) -> AsyncEngine:
        """An engine whose connections are set up for this store (pragmas, timeouts).
        `pool_size`: None for the store's own pool, 0 for no pool (a fresh connection per
        use), n for exactly n connections (no overflow). `pre_ping`: test a pooled connection
        before handing it out (replaced when the server dropped it)."""

    def read_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """The engine for reads: every read is one statement, so none needs a transaction."""
        return engine

    def write_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """The engine to open write transactions on (SQLite begins them differently)."""
        return engine

    @abstractmethod
    def write_lock(self) -> AbstractAsyncContextManager[object]:
        """Held around every write transaction (SQLite has one writer; PostgreSQL many)."""

    @abstractmethod
    def raw_transaction(
        self, engine: AsyncEngine, *, single_statement: bool = False
    ) -> AbstractAsyncContextManager[Any]:
        """One write transaction on the raw driver connection, yielding that connection.
        `single_statement`: the caller sends one (atomic) statement, so no BEGIN is needed."""

    @abstractmethod
    def insert(self, table: sa.Table) -> Any:
        """This dialect's INSERT construct (with on_conflict_do_nothing / _do_update)."""

    @abstractmethod
    def greatest(self, a: Any, b: Any) -> sa.ColumnElement[Any]:
        """The larger of two non-null values."""

    async def prepare_migration(self, conn: AsyncConnection) -> None:  # noqa: B027
        """Serialize migrations between processes (the default: the write lock suffices)."""

    # The most rows write_small takes (SQLite binds three parameters per key, 32766 at most).
    small_max_rows: ClassVar[int] = 5_000
    # Whether write_small sends a single statement (see raw_transaction).
    small_is_one_statement: ClassVar[bool] = False

    @abstractmethod
    async def write_small(self, raw: Any, batches: list[SeriesBatch]) -> int:
        """Upsert a small batch (all series) inside `raw`'s transaction; rows written.
        Keeps series_stats exact in the same transaction."""

    @abstractmethod
    async def write_bulk(self, transaction: RawTransaction, batch: SeriesBatch) -> int:
        """Upsert one series' chunk of up to bulk_chunk_rows, in transactions it opens with
        `transaction()`; rows written. Keeps series_stats exact in the same transaction."""

    @abstractmethod
    async def read_columns(
        self, engine: AsyncEngine, series: SeriesKey, start_ms: int, end_ms: int, limit: int
    ) -> CandleColumns:
        """Up to `limit` candles of `series` with start_ms <= ts < end_ms, ascending, as
        columns, by the engine's fastest bulk read; raises driver errors (the store translates
        them)."""

    async def after_write(self, engine: AsyncEngine, rows: int) -> None:  # noqa: B027
        """Housekeeping after a write, outside the write lock (SQLite: WAL checkpoints)."""

    async def checkpoint(self, engine: AsyncEngine) -> None:  # noqa: B027
        """Fold the write-ahead log into the database file, when the engine has one to fold."""

    def prepare_location(self, target: str) -> None:  # noqa: B027
        """Before the first migration: make the place the database lives (SQLite's directory)."""

    @abstractmethod
    def epoch_ms(self, column: Any) -> sa.ColumnElement[int]:
        """A stored time column as epoch milliseconds, for arithmetic in SQL (coverage)."""

    # -- several daemons on one database (cluster.py) ---------------------------------------------

    @abstractmethod
    def clock(self, plus_ms: int = 0) -> sa.ColumnElement[Any]:
        """The database's time now (+ `plus_ms`), comparable with and storable in a time column:
        lease expiries are judged by one clock, whatever the members' machines say."""

    def lock_rows(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """`select` locking the rows it returns until the transaction ends (waiting for them);
        the default leaves it as it is (SQLite: one writer at a time)."""
        return select

    def skip_locked(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """`select` locking the rows it returns and passing over rows another transaction has
        locked (claims); the default leaves it as it is (SQLite: one writer at a time)."""
        return select

    # -- the gap detector's many-series reads (one or a few statements per cycle) ----------------

    @abstractmethod
    async def find_holes(
        self, conn: AsyncConnection, queries: Sequence[HoleQuery]
    ) -> list[tuple[SeriesKey, int, int]]:
        """(series, prev, ts) for every two neighbouring stored open times in a query's
        [first, last] more than its period apart, as epoch ms."""

    @abstractmethod
    async def find_empty_ranges(
        self, conn: AsyncConnection, windows: Sequence[Window], limit: int
    ) -> list[tuple[SeriesKey, int, int]]:
        """(series, start, end) of the recorded empty ranges overlapping each window, ordered by
        series and start, at most `limit` in all."""

    # -- the API's fast path -----------------------------------------------------------------------

    def candles_json(self, rows: sa.Subquery) -> sa.Executable | None:
        """One row (text, count, last ts): the `rows` subquery (ts, open, high, low, close,
        volume, final) as JSON objects joined by commas, built by the database, their count and
        the last row's ts (epoch ms; where the next page starts); None where reading the rows
        and writing the JSON in Python is as fast (the default)."""
        return None


def pool_options(pool_size: int | None, pre_ping: bool, default: dict[str, Any]) -> dict[str, Any]:
    """create_async_engine's pool arguments for Dialect.create_engine's."""
    if pool_size is None:
        options = dict(default)
    elif pool_size == 0:
        options = {"poolclass": NullPool}
    else:
        options = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 30}
    return options | {"pool_pre_ping": pre_ping}
