"""Bookkeeping tables: ingestion jobs, data gaps, known-empty ranges, per-series state.
Written once with SQLAlchemy Core for both engines (see `SqlBase`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from market_data.models import Gap, GapStatus, Job, JobStatus, JobType, SeriesKey
from market_data.storage.core import SqlBase
from market_data.storage.tables import (
    ERROR_TEXT_LIMIT,
    data_gaps,
    empty_ranges,
    ingestion_jobs,
    series_state,
)

MAX_LIST = 10_000  # any listing returns at most this many rows
_JOB_TYPES = frozenset(JobType)
_JOB_STATUSES = frozenset(JobStatus)
_CLOSED = (GapStatus.REPAIRED.value, GapStatus.EMPTY.value)
_OPEN = (GapStatus.OPEN.value, GapStatus.FAILED.value)


def _bounded(limit: int) -> int:
    return max(0, min(int(limit), MAX_LIST))


def _error_text(text: str | None) -> str | None:
    return None if text is None else text[:ERROR_TEXT_LIMIT]


def _gap(row: sa.Row[Any]) -> Gap:
    m = row._mapping
    return Gap(
        id=m["id"],
        exchange=m["exchange"],
        symbol=m["symbol"],
        timeframe=m["timeframe"],
        gap_start=m["gap_start"],
        gap_end=m["gap_end"],
        detected_at=m["detected_at"],
        repaired_at=m["repaired_at"],
        status=m["status"],
        candles_repaired=m["candles_repaired"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
    )


def _job(row: sa.Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        exchange=m["exchange"],
        symbol=m["symbol"],
        timeframe=m["timeframe"],
        job_type=m["job_type"],
        status=m["status"],
        started_at=m["started_at"],
        completed_at=m["completed_at"],
        candles_fetched=m["candles_fetched"],
        last_error=m["last_error"],
        owner=m["owner"],
    )


class JobsMixin(SqlBase):
    async def create_job(
        self, job_type: str, symbol: str | None = None, timeframe: str | None = None
    ) -> int:
        if job_type not in _JOB_TYPES:
            raise ValueError(f"unknown job type {job_type!r}")
        stmt = ingestion_jobs.insert().values(
            exchange=self.exchange,
            symbol=symbol,
            timeframe=timeframe,
            job_type=job_type,
            status=JobStatus.RUNNING.value,
            started_at=self._clock(),
            candles_fetched=0,
            owner=self.owner,
        )
        async with self._write() as conn:
            return int((await conn.execute(stmt.returning(ingestion_jobs.c.id))).scalar_one())

    async def finish_job(
        self, job_id: int, status: str, candles_fetched: int = 0, last_error: str | None = None
    ) -> None:
        if status not in _JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}")
        stmt = (
            ingestion_jobs.update()
            .where(ingestion_jobs.c.id == job_id)
            .values(
                status=status,
                completed_at=self._clock(),
                candles_fetched=candles_fetched,
                last_error=_error_text(last_error),
            )
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def update_job_progress(self, job_id: int, candles_fetched: int) -> None:
        stmt = (
            ingestion_jobs.update()
            .where(ingestion_jobs.c.id == job_id)
            .values(candles_fetched=candles_fetched)
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def list_jobs(
        self,
        *,
        limit: int = 20,
        job_type: str | None = None,
        status: str | None = None,
        symbol: str | None = None,
    ) -> list[Job]:
        t = ingestion_jobs
        stmt = sa.select(t).order_by(t.c.started_at.desc(), t.c.id.desc()).limit(_bounded(limit))
        for column, value in (("job_type", job_type), ("status", status), ("symbol", symbol)):
            if value is not None:
                stmt = stmt.where(t.c[column] == value)
        async with self._read() as conn:
            return [_job(row) for row in await conn.execute(stmt)]

    async def fail_running_jobs(
        self, reason: str, status: str = "failed", *, owner: str | None = None
    ) -> int:
        if status not in _JOB_STATUSES or status == JobStatus.RUNNING:
            raise ValueError(f"cannot end jobs as {status!r}")
        stmt = (
            ingestion_jobs.update()
            .where(ingestion_jobs.c.status == JobStatus.RUNNING)
            .values(status=status, completed_at=self._clock(), last_error=_error_text(reason))
        )
        if owner is not None:
            stmt = stmt.where(ingestion_jobs.c.owner == owner)
        async with self._write() as conn:
            return int((await conn.execute(stmt)).rowcount)


class GapsMixin(SqlBase):
    async def list_gaps(
        self,
        *,
        repaired: bool | None = None,
        status: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        limit: int = 100,
        due_before_ms: int | None = None,
        oldest_first: bool = False,
        within: tuple[int, int] | None = None,
    ) -> list[Gap]:
        t = data_gaps
        stmt = sa.select(t).where(t.c.exchange == self.exchange)
        if repaired is not None:
            stmt = stmt.where(t.c.status.in_(_CLOSED if repaired else _OPEN))
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        if symbol is not None:
            stmt = stmt.where(t.c.symbol == symbol)
        if timeframe is not None:
            stmt = stmt.where(t.c.timeframe == timeframe)
        if due_before_ms is not None:
            stmt = stmt.where(
                sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= due_before_ms)
            )
        if within is not None:
            stmt = stmt.where(t.c.gap_start >= within[0], t.c.gap_end <= within[1])
        order = (t.c.gap_start, t.c.id) if oldest_first else (t.c.gap_start.desc(), t.c.id.desc())
        stmt = stmt.order_by(*order).limit(_bounded(limit))
        async with self._read() as conn:
            return [_gap(row) for row in await conn.execute(stmt)]

    async def close_gap(self, gap_id: int, status: str, candles_repaired: int, now_ms: int) -> None:
        if status not in _CLOSED:
            raise ValueError(f"a gap closes as repaired or empty, not {status!r}")
        stmt = (
            data_gaps.update()
            .where(data_gaps.c.id == gap_id)
            .values(
                status=status,
                candles_repaired=candles_repaired,
                repaired_at=now_ms,
                next_attempt_at=None,
            )
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def record_gap_failure(
        self, gap_id: int, error: str, next_attempt_at_ms: int, failed: bool
    ) -> None:
        t = data_gaps
        values: dict[str, Any] = {
            "attempts": t.c.attempts + 1,
            "last_error": _error_text(error),
            "next_attempt_at": next_attempt_at_ms,
        }
        if failed:
            values["status"] = GapStatus.FAILED.value
        stmt = t.update().where(t.c.id == gap_id, t.c.status.in_(_OPEN)).values(values)
        async with self._write() as conn:
            await conn.execute(stmt)

    async def count_open_gaps(self) -> int:
        t = data_gaps
        stmt = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.exchange == self.exchange, t.c.status.in_(_OPEN))
        )
        async with self._read() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def delete_gaps_before(self, series: SeriesKey, cutoff_ms: int) -> int:
        """Drop gap rows that ended at or before the cut-off, and the known-empty ranges that
        did (retention purged everything there, so neither can matter again)."""
        async with self._write() as conn:
            gone = await conn.execute(
                data_gaps.delete().where(
                    self._series(data_gaps, series), data_gaps.c.gap_end <= cutoff_ms
                )
            )
            await conn.execute(
                empty_ranges.delete().where(
                    self._series(empty_ranges, series), empty_ranges.c.range_end <= cutoff_ms
                )
            )
        return int(gone.rowcount)

    # known-empty ranges -------------------------------------------------------------------------
    async def add_empty_ranges(self, series: SeriesKey, ranges: Sequence[tuple[int, int]]) -> None:
        widest: dict[int, int] = {}
        for start, end in ranges:
            if end > start:
                widest[start] = max(end, widest.get(start, end))
        rows = [
            {
                "exchange": self.exchange,
                "symbol": series.symbol,
                "timeframe": series.timeframe,
                "range_start": start,
                "range_end": end,
            }
            for start, end in widest.items()
        ]
        if not rows:
            return
        # One statement run for many rows, not a multi-row VALUES: SQLAlchemy compiles a VALUES
        # list anew for each row count (~15 ms), and the live writer calls this every minute
        # for every quiet series.
        stmt = self.dialect.insert(empty_ranges)
        stmt = stmt.on_conflict_do_update(
            index_elements=["exchange", "symbol", "timeframe", "range_start"],
            set_={
                "range_end": self.dialect.greatest(
                    empty_ranges.c.range_end, stmt.excluded.range_end
                )
            },
        )
        async with self._write() as conn:
            await conn.execute(stmt, rows)

    async def empty_ranges(
        self, series: SeriesKey, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]:
        """Known-empty ranges that overlap [start_ms, end_ms), ascending."""
        t = empty_ranges
        stmt = (
            sa.select(t.c.range_start, t.c.range_end)
            .where(self._series(t, series), t.c.range_start < end_ms, t.c.range_end > start_ms)
            .order_by(t.c.range_start)
            .limit(MAX_LIST)
        )
        async with self._read() as conn:
            return [(int(a), int(b)) for a, b in await conn.execute(stmt)]

    # per-series state -------------------------------------------------------------------------
    async def _get_state(self, series: SeriesKey, column: str) -> int | None:
        stmt = sa.select(series_state.c[column]).where(self._series(series_state, series))
        async with self._read() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else int(value)

    async def _set_state(self, series: SeriesKey, column: str, value: int) -> None:
        stmt = self.dialect.insert(series_state).values(
            exchange=self.exchange,
            symbol=series.symbol,
            timeframe=series.timeframe,
            **{column: value},
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["exchange", "symbol", "timeframe"], set_={column: value}
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def get_retention_horizon(self, series: SeriesKey) -> int | None:
        return await self._get_state(series, "retention_horizon")

    async def set_retention_horizon(self, series: SeriesKey, ts_ms: int) -> None:
        await self._set_state(series, "retention_horizon", ts_ms)
