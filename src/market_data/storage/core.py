"""The store's plumbing: engine, dialect, transactions, error translation, lifecycle.

Every database call goes through `_read()`, `_write()` or `_raw_write()`, which is where driver
errors become `StorageUnavailable` / `StorageError` (naming `host:port/db`, never the password)
and where SQLite's single writer is enforced. Write transactions also report their outcome to
`write_health` (what /health shows), and after a failed one the next attempt starts on a fresh
pool: SQLite opens a write-protected file read-only and keeps that connection read-only for good,
and a PostgreSQL session started read-only (a standby, `default_transaction_read_only`) stays so.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from market_data.dburl import describe_target, normalize_database_url, password_of
from market_data.errors import ConfigError, MarketDataError, StorageUnavailable
from market_data.models import EXCHANGE, SeriesKey
from market_data.storage.health import WriteHealth
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
        owner: str | None = None,
    ) -> None:
        try:
            self.url = normalize_database_url(database_url)
        except ValueError as exc:
            raise ConfigError("DATABASE_URL", str(exc)) from None
        self.target = describe_target(database_url)
        self.exchange = exchange
        self.owner = owner  # DAEMON_ID, recorded on the jobs this store creates
        self._password = password_of(database_url)
        self._clock = clock
        self.dialect = dialect_for(self.url, exchange)
        self.engine = self.dialect.create_engine()
        self.write_health = WriteHealth()
        # The health ping's own connection (pings are shared, so one is enough): it never
        # waits behind other work. Pre-pinged: a connection the server dropped is replaced,
        # so a ping that fails means a new connection cannot be made either.
        self._probe_engine = self.dialect.create_engine(pool_size=1, pre_ping=True)
        self._readers: list[Self] = []
        self._ping_task: asyncio.Future[None] | None = None

    def reader(self, pool_size: int) -> Self:
        """This store with its reads on a pool of `pool_size` connections of their own (the
        API's), so that heavy reads never hold the connections the daemon writes with.
        Writes through it are still possible (same lock, same health record); close() on
        this store closes the reader's pool too."""
        reader = copy.copy(self)
        reader.dialect = copy.copy(self.dialect)  # per-engine caches; the write lock is shared
        reader.engine = reader.dialect.create_engine(pool_size=pool_size)
        reader._probe_engine = reader.engine  # its own: closing it leaves this store's alone
        reader._readers = []
        reader._ping_task = None
        self._readers.append(reader)
        return reader

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
            await self._renew_after_failure()
            try:
                async with self.dialect.write_engine(self.engine).begin() as conn:
                    yield conn
            except DRIVER_ERRORS as exc:
                raise self._write_failed(self._translated(exc)) from exc
            except StorageUnavailable as exc:
                self._write_failed(exc)
                raise
        self.write_health.succeeded(self._clock())

    @asynccontextmanager
    async def _raw_write(self, *, single_statement: bool = False) -> AsyncIterator[Any]:
        """One write transaction on the raw driver connection (the candle fast paths)."""
        async with self.dialect.write_lock():
            await self._renew_after_failure()
            try:
                async with self.dialect.raw_transaction(
                    self.engine, single_statement=single_statement
                ) as raw:
                    yield raw
            except DRIVER_ERRORS as exc:
                raise self._write_failed(self._translated(exc)) from exc
            except StorageUnavailable as exc:
                self._write_failed(exc)
                raise
        self.write_health.succeeded(self._clock())

    def _write_failed(self, exc: MarketDataError) -> MarketDataError:
        """Record a write that failed for an outage (what /health reports)."""
        if isinstance(exc, StorageUnavailable):
            self.write_health.failed(exc, self._clock())
        return exc

    async def _renew_after_failure(self) -> None:
        """After a failed write, every write attempt starts on fresh connections: the pooled
        ones (reads open more meanwhile) may have been opened while the database was read-only
        and would refuse the write even once it is writable again. Failed writes are retried
        with backoff, so this costs one connection per attempt at most."""
        if self.write_health.failing:
            await self.engine.dispose()

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
        """`SELECT 1` on a connection of its own: can the database be read now. Concurrent callers
        share the ping in flight, so a burst of /health requests opens one connection."""
        task = self._ping_task
        if task is None or task.done():
            task = self._ping_task = asyncio.ensure_future(self._ping_once())
            # Retrieved here, whether or not a caller is still waiting for it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)

    async def _ping_once(self) -> None:
        try:
            async with self._probe_engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except DRIVER_ERRORS as exc:
            raise self._translated(exc) from exc

    async def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log into the database (no-op on PostgreSQL); the daemon
        calls this every few seconds."""
        try:
            await self.dialect.checkpoint(self.engine)
        except DRIVER_ERRORS as exc:
            raise self._translated(exc) from exc

    async def close(self) -> None:
        for reader in self._readers:
            await reader.close()
        await self._probe_engine.dispose()
        await self.engine.dispose()
