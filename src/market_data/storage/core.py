"""The store's plumbing: engine, dialect, transactions, error translation, lifecycle.

Every database call goes through `_read()`, `_write()` or `_raw_write()`, which is where driver
errors become `StorageUnavailable` / `StorageError` (naming `host:port/db`, never the password)
and where SQLite's single writer is enforced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from market_data.dburl import describe_target, normalize_database_url, password_of
from market_data.errors import ConfigError, MarketDataError
from market_data.models import EXCHANGE, SeriesKey
from market_data.storage.registry import dialect_for
from market_data.storage.translate import DRIVER_ERRORS, translate
from market_data.timeframes import now_ms

MIGRATIONS = Path(__file__).parent / "migrations"




def _alembic_upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class SqlBase:
    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], int] = now_ms,
        exchange: str = EXCHANGE,
    ) -> None:
        try:
            self.url = normalize_database_url(database_url)
        except ValueError as exc:
            raise ConfigError("DATABASE_URL", str(exc)) from None
        self.target = describe_target(database_url)
        self.exchange = exchange
        self._password = password_of(database_url)
        self._clock = clock
        self.dialect = dialect_for(self.url, exchange)
        self.engine = self.dialect.create_engine()

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.dialect.name

    # transactions ------------------------------------------------------------------------------
    def _translated(self, exc: BaseException) -> MarketDataError:
        return translate(exc, self.target, self._password)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.dialect.read_engine(self.engine).connect() as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise self._translated(exc) from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction through SQLAlchemy (committed on success)."""
        async with self.dialect.write_lock():
            try:
                async with self.dialect.write_engine(self.engine).begin() as conn:
                    yield conn
            except DRIVER_ERRORS as exc:
                raise self._translated(exc) from exc

    @asynccontextmanager
    async def _raw_write(self, *, single_statement: bool = False) -> AsyncIterator[Any]:
        """One write transaction on the raw driver connection (the candle fast paths)."""
        async with self.dialect.write_lock():
            try:
                async with self.dialect.raw_transaction(
                    self.engine, single_statement=single_statement
                ) as raw:
                    yield raw
            except DRIVER_ERRORS as exc:
                raise self._translated(exc) from exc

    def _series(self, table: sa.Table, series: SeriesKey) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.exchange == self.exchange,
            table.c.symbol == series.symbol,
            table.c.timeframe == series.timeframe,
        )

    # lifecycle ---------------------------------------------------------------------------------
    async def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision (safe to run concurrently)."""
        self.dialect.prepare_location(self.target)
        async with self._write() as conn:
            await self.dialect.prepare_migration(conn)
            await conn.run_sync(_alembic_upgrade)

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log into the database (no-op on PostgreSQL); the daemon
        calls this every few seconds."""
        try:
            await self.dialect.checkpoint(self.engine)
        except DRIVER_ERRORS as exc:
            raise self._translated(exc) from exc

    async def close(self) -> None:
        await self.engine.dispose()
