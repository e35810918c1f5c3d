"""SqlStore: the one Store implementation, for SQLite and PostgreSQL.

Candles are written through the dialect's raw-driver fast paths (`sqlite.py`, `postgres.py`)
and read with SQLAlchemy Core. `series_stats` is kept exact in the same transaction as every
write or delete, so /status never counts rows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from market_data.gcpause import collector_paused
from market_data.models import Candle, SeriesKey, SeriesStats
from market_data.storage.base import (
    COLUMN_CHUNK_ROWS,
    MAX_COLUMN_CHUNK_ROWS,
    MAX_TIME_MS,
    CandleColumns,
    QuarantineItem,
    UpsertResult,
)
from market_data.storage.batches import prepare
from market_data.storage.cluster import ClusterMixin
from market_data.storage.core import SqlBase
from market_data.storage.coverage import CoverageMixin
from market_data.storage.detection import DetectionMixin
from market_data.storage.records import MAX_LIST, GapsMixin, JobsMixin
from market_data.storage.tables import RAW_TEXT_LIMIT, candles, rejected_candles, series_stats
from market_data.storage.translate import DRIVER_ERRORS
from market_data.timing import UpsertTimings

QUARANTINE_LIMIT = 100_000
# Batches up to this many rows take the low-latency path (one statement, one transaction);
# larger ones are cut into the dialect's bulk chunks.
BULK_THRESHOLD = 1_000
_CANDLE_COLUMNS = (
    candles.c.symbol,
    candles.c.timeframe,
    candles.c.ts,
    candles.c.open,
    candles.c.high,
    candles.c.low,
    candles.c.close,
    candles.c.volume,
    candles.c.final,
)


class _HasDatabaseUrl(Protocol):
    @property
    def database_url(self) -> str: ...


def _candle(row: Sequence[Any]) -> Candle:
    sym, tf, ts, o, h, lo, c, v, final = row
    return Candle(sym, tf, int(ts), o, h, lo, c, v, bool(final))


class SqlStore(JobsMixin, GapsMixin, DetectionMixin, CoverageMixin, ClusterMixin, SqlBase):
    def __init__(
        self,
        database_url: str,
        *,
        bulk_threshold: int = BULK_THRESHOLD,
        quarantine_limit: int = QUARANTINE_LIMIT,
        upsert_timings: UpsertTimings | None = None,
        **options: Any,
    ) -> None:
        super().__init__(database_url, **options)
        self._bulk_threshold = bulk_threshold
        self._quarantine_limit = quarantine_limit
        # Every upsert's latency, for /metrics (the daemon passes its own to read them).
        self.upsert_timings = UpsertTimings() if upsert_timings is None else upsert_timings

    # candles: writes ---------------------------------------------------------------------------
    async def upsert_candles(self, candles: Sequence[Candle]) -> UpsertResult:
        """See Store.upsert_candles. Large batches commit chunk by chunk: after an error the
        chunks before it stay written, and retrying the batch is idempotent. Rejected rows
        are also kept in `rejected_candles` (source "store"). Timed into `upsert_timings`."""
        started = time.perf_counter()
        try:
            result = await self._upsert(candles)
        except Exception:
            self.upsert_timings.errors += 1
            raise
        self.upsert_timings.record(time.perf_counter() - started, len(candles))
        return result

    async def _upsert(self, candles: Sequence[Candle]) -> UpsertResult:
        with collector_paused():  # one row tuple per candle, none cyclic (see gcpause)
            batches, rejected = prepare(candles, self.exchange)
        written = 0
        rows = sum(len(b.rows) for b in batches)
        if 0 < rows <= min(self._bulk_threshold, self.dialect.small_max_rows):
            one = self.dialect.small_is_one_statement
            async with self._raw_write(single_statement=one) as raw:
                written = await self.dialect.write_small(raw, batches)
            await self._after_write(rows)
        elif rows:
            for batch in batches:
                for chunk in batch.chunks(self.dialect.bulk_chunk_rows):
                    written += await self.dialect.write_bulk(self._raw_write, chunk)
                    await self._after_write(len(chunk.rows))
        if rejected:
            await self.quarantine(
                [
                    QuarantineItem(
                        "store",
                        r.candle.symbol,
                        r.candle.timeframe,
                        r.candle.ts if type(r.candle.ts) is int else None,
                        repr(r.candle),
                        r.reason,
                    )
                    for r in rejected
                ]
            )
        return UpsertResult(written=written, rejected=rejected)

    async def _after_write(self, rows: int) -> None:
        try:
            await self.dialect.after_write(self.engine, rows)
        except DRIVER_ERRORS as exc:
            raise self._translated(exc) from exc

    async def delete_candles_before(
        self, series: SeriesKey, cutoff_ms: int, batch_size: int = 10_000
    ) -> int:
        """Delete candles with ts < cutoff_ms, oldest first, `batch_size` rows per transaction
        (so no single delete holds the table for long), keeping series_stats exact."""
        batch_size = max(1, batch_size)
        where = sa.and_(self._series(candles, series), candles.c.ts < cutoff_ms)
        total = 0
        while True:
            async with self._write() as conn:
                bound = (
                    await conn.execute(
                        sa.select(candles.c.ts)
                        .where(where)
                        .order_by(candles.c.ts)
                        .offset(batch_size - 1)
                        .limit(1)
                    )
                ).scalar_one_or_none()
                step = where if bound is None else sa.and_(where, candles.c.ts <= bound)
                deleted = int((await conn.execute(candles.delete().where(step))).rowcount)
                if deleted:
                    await conn.execute(self._stats_after_delete(series, deleted))
            total += deleted
            if bound is None or deleted == 0:
                return total

    def _stats_after_delete(self, series: SeriesKey, deleted: int) -> sa.Update:
        mine = self._series(candles, series)
        ts = candles.c.ts
        return (
            series_stats.update()
            .where(self._series(series_stats, series))
            .values(
                candle_count=series_stats.c.candle_count - deleted,
                first_ts=sa.select(sa.func.min(ts)).where(mine).scalar_subquery(),
                last_ts=sa.select(sa.func.max(ts)).where(mine).scalar_subquery(),
                last_final_ts=sa.select(ts)
                .where(mine, candles.c.final)
                .order_by(ts.desc())
                .limit(1)
                .scalar_subquery(),
            )
        )

    # candles: reads ----------------------------------------------------------------------------
    def _select(self, series: SeriesKey) -> sa.Select[Any]:
        return sa.select(*_CANDLE_COLUMNS).where(self._series(candles, series))

    async def _one(self, stmt: sa.Select[Any]) -> Candle | None:
        async with self._read() as conn:
            row = (await conn.execute(stmt.limit(1))).first()
        return None if row is None else _candle(row)

    async def first_candle(self, series: SeriesKey) -> Candle | None:
        return await self._one(self._select(series).order_by(candles.c.ts))

    async def last_candle(self, series: SeriesKey, *, final_only: bool = False) -> Candle | None:
        stmt = self._select(series).order_by(candles.c.ts.desc())
        if final_only:
            stmt = stmt.where(candles.c.final)
        return await self._one(stmt)

    async def candles_in_range(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> list[Candle]:
        stmt = (
            self._select(series)
            .where(candles.c.ts >= start_ms, candles.c.ts < end_ms)
            .order_by(candles.c.ts)
            .limit(max(0, min(limit, 10 * MAX_LIST)))
        )
        async with self._read() as conn:
            return [_candle(row) for row in await conn.execute(stmt)]

    async def candles_json(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> tuple[str, int, int | None] | None:
        """The rows of `candles_in_range` as JSON objects joined by commas, ts as ISO 8601 UTC
        (`{"ts":"2026-02-05T20:00:00Z","open":1.5,...,"final":true}`), their count and the last
        row's ts (where the next page starts).

        The database builds the text where the dialect can (PostgreSQL); None elsewhere (SQLite,
        where reading the rows is already as fast): the caller then writes the JSON itself.
        """
        rows = (
            sa.select(*_CANDLE_COLUMNS[2:])  # ts .. final: the series is known
            .where(self._series(candles, series), candles.c.ts >= start_ms, candles.c.ts < end_ms)
            .order_by(candles.c.ts)
            .limit(max(0, min(limit, 10 * MAX_LIST)))
            .subquery("c")
        )
        stmt = self.dialect.candles_json(rows)
        if stmt is None:
            return None
        async with self._read() as conn:
            text, count, last = (await conn.execute(stmt)).one()
        return str(text), int(count), last

    async def candle_columns(
        self,
        series: SeriesKey,
        start_ms: int,
        end_ms: int,
        *,
        chunk_rows: int = COLUMN_CHUNK_ROWS,
        limit: int | None = None,
    ) -> AsyncIterator[CandleColumns]:
        """See Store.candle_columns. Each chunk is its own read (no connection is held between
        chunks, so a slow consumer holds none); the next starts after the previous chunk's
        last ts."""
        chunk_rows = max(1, min(chunk_rows, MAX_COLUMN_CHUNK_ROWS))
        # Within what every engine can hold as a time (PostgreSQL: up to the year 294276).
        start_ms, end_ms = max(0, start_ms), min(end_ms, MAX_TIME_MS)
        left = limit
        while start_ms < end_ms and (left is None or left > 0):
            want = chunk_rows if left is None else min(chunk_rows, left)
            try:
                chunk = await self.dialect.read_columns(self.engine, series, start_ms, end_ms, want)
            except DRIVER_ERRORS as exc:
                raise self._translated(exc) from exc
            if len(chunk):
                yield chunk
            if len(chunk) < want:
                return
            start_ms = int(chunk.ts[-1]) + 1
            if left is not None:
                left -= len(chunk)

    async def open_times_in_range(self, series: SeriesKey, start_ms: int, end_ms: int) -> list[int]:
        stmt = (
            sa.select(candles.c.ts)
            .where(self._series(candles, series), candles.c.ts >= start_ms, candles.c.ts < end_ms)
            .order_by(candles.c.ts)
        )
        async with self._read() as conn:
            return [int(ts) for ts in (await conn.execute(stmt)).scalars()]

    async def series_stats(self) -> list[SeriesStats]:
        t = series_stats
        stmt = (
            sa.select(
                t.c.symbol,
                t.c.timeframe,
                t.c.candle_count,
                t.c.first_ts,
                t.c.last_ts,
                t.c.last_final_ts,
            )
            .where(t.c.exchange == self.exchange)
            .order_by(t.c.symbol, t.c.timeframe)
        )
        async with self._read() as conn:
            return [
                SeriesStats(sym, tf, int(n), first, last, last_final)
                for sym, tf, n, first, last, last_final in await conn.execute(stmt)
            ]

    # quarantine --------------------------------------------------------------------------------
    async def quarantine(self, items: Sequence[QuarantineItem]) -> None:
        """Keep refused rows; only the newest `quarantine_limit` stay."""
        now = self._clock()
        rows = [
            {
                "source": item.source[:100],
                "symbol": item.symbol,
                "timeframe": item.timeframe,
                "ts": item.ts,
                "raw": item.raw[:RAW_TEXT_LIMIT],
                "reason": item.reason[:RAW_TEXT_LIMIT],
                "seen_at": now,
            }
            for item in items[-self._quarantine_limit :]
        ]
        if not rows:
            return
        t = rejected_candles
        async with self._write() as conn:
            for i in range(0, len(rows), 500):
                await conn.execute(t.insert(), rows[i : i + 500])
            span = sa.select(sa.func.min(t.c.id), sa.func.max(t.c.id))
            low, high = (await conn.execute(span)).one()
            if high - low + 1 > self._quarantine_limit:
                oldest_kept = (
                    sa.select(t.c.id)
                    .order_by(t.c.id.desc())
                    .offset(self._quarantine_limit - 1)
                    .limit(1)
                    .scalar_subquery()
                )
                await conn.execute(t.delete().where(t.c.id < oldest_kept))


def open_store(target: str | _HasDatabaseUrl, **options: Any) -> SqlStore:
    """A store for a DATABASE_URL (or anything with a `database_url`, such as Settings).
    Nothing connects until first use; call `upgrade()` before anything else."""
    url = target if isinstance(target, str) else target.database_url
    return SqlStore(url, **options)


__all__ = ["SqlStore", "open_store"]
