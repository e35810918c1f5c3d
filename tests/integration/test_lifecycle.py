"""The lifecycle toolkit on real parts: job rows in a real database, retries on a virtual clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from market_data.errors import ExchangeUnavailable, StorageUnavailable
from market_data.lifecycle import (
    Backoff,
    Stopped,
    VirtualClock,
    recorded_job,
    retry,
    until_stopped,
    wait_for_stop,
)
from market_data.models import JobStatus, JobType
from market_data.storage.sql import SqlStore


async def only_job(store: SqlStore) -> tuple[str, int, str | None]:
    (job,) = await store.list_jobs()
    return job.status, job.candles_fetched, job.last_error


async def test_recorded_job_finishes_success_with_counts(store: SqlStore) -> None:
    async with recorded_job(store, JobType.UPDATE, "BTCUSD", "1h") as job:
        (running,) = await store.list_jobs()
        assert running.status == JobStatus.RUNNING
        assert (running.symbol, running.timeframe) == ("BTCUSD", "1h")
        job.candles = 7
    assert await only_job(store) == (JobStatus.SUCCESS, 7, None)


async def test_recorded_job_keeps_an_outcome_the_body_decided(store: SqlStore) -> None:
    async with recorded_job(store, JobType.GAP_DETECTION) as job:
        job.cancel("skipped: too many open gaps")
    assert await only_job(store) == (JobStatus.CANCELLED, 0, "skipped: too many open gaps")


async def test_recorded_job_fails_on_an_exception_and_raises_it(store: SqlStore) -> None:
    async def run() -> None:
        async with recorded_job(store, JobType.BACKFILL) as job:
            job.candles = 3
            raise ExchangeUnavailable("down")

    with pytest.raises(ExchangeUnavailable):
        await run()
    assert await only_job(store) == (JobStatus.FAILED, 3, "ExchangeUnavailable: down")


async def test_recorded_job_is_cancelled_with_its_task(store: SqlStore) -> None:
    entered = asyncio.Event()

    async def work() -> None:
        async with recorded_job(store, JobType.CLEANUP):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await only_job(store) == (JobStatus.CANCELLED, 0, "interrupted")


class FinishRefused:
    """A real store whose finish_job fails, as when the database goes away mid-run."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    async def create_job(
        self, job_type: str, symbol: str | None = None, timeframe: str | None = None
    ) -> int:
        return await self.store.create_job(job_type, symbol, timeframe)

    async def finish_job(
        self, job_id: int, status: str, candles_fetched: int = 0, last_error: str | None = None
    ) -> None:
        raise StorageUnavailable("database gone")


async def test_a_failed_finish_is_logged_not_raised_over_the_error(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def failing() -> None:
        async with recorded_job(FinishRefused(store), JobType.UPDATE):
            raise ExchangeUnavailable("down")

    async def succeeding() -> None:
        async with recorded_job(FinishRefused(store), JobType.UPDATE):
            pass

    with pytest.raises(ExchangeUnavailable):
        await failing()
    assert "Could not record the end of job" in caplog.text
    # On the success path the run did not complete: the storage error is the run's.
    with pytest.raises(StorageUnavailable):
        await succeeding()


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    plain = Backoff(1.0, 8.0, jitter=False)
    assert [plain.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    jittered = Backoff(1.0, 8.0)
    delays = [jittered.next() for _ in range(6)]
    assert all(1.0 <= d <= cap for d, cap in zip(delays, [1, 2, 4, 8, 8, 8], strict=True))
    jittered.reset()
    assert jittered.next() == 1.0


async def test_retry_backs_off_on_the_clock_until_success() -> None:
    clock = VirtualClock()
    calls: list[float] = []
    seen: list[tuple[int, float]] = []

    async def flaky() -> str:
        calls.append(clock.monotonic())
        if len(calls) < 4:
            raise ExchangeUnavailable("not yet")
        return "ok"

    task = asyncio.create_task(
        retry(
            flaky,
            backoff=Backoff(1.0, 60.0, jitter=False),
            stop=asyncio.Event(),
            retry_on=ExchangeUnavailable,
            on_retry=lambda e, n, d: seen.append((n, d)),
            clock=clock,
        )
    )
    for delay in (1, 2, 4):
        while not clock.sleepers:
            await asyncio.sleep(0)
        await clock.advance(delay)
    assert await task == "ok"
    assert seen == [(1, 1.0), (2, 2.0), (3, 4.0)]
    assert [round(t - calls[0]) for t in calls] == [0, 1, 3, 7]


async def test_retry_gives_up_after_attempts_and_on_other_errors() -> None:
    async def down() -> None:
        raise ExchangeUnavailable("down")

    with pytest.raises(ExchangeUnavailable):
        await retry(
            down,
            backoff=Backoff(0, 0),
            attempts=3,
            retry_on=ExchangeUnavailable,
            sleep=lambda s: asyncio.sleep(0),
        )

    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retry(broken, backoff=Backoff(0, 0), retry_on=ExchangeUnavailable)


async def test_retry_stops_during_its_wait() -> None:
    clock = VirtualClock()
    stop = asyncio.Event()

    async def down() -> None:
        raise ExchangeUnavailable("down")

    task = asyncio.create_task(retry(down, backoff=Backoff(3600, 3600), stop=stop, clock=clock))
    while not clock.sleepers:
        await asyncio.sleep(0)
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(task, 5)


async def test_waits_end_on_stop_or_on_the_clock() -> None:
    clock = VirtualClock(start_ms=1_000)
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_for_stop(stop, 30, clock))
    while not clock.sleepers:  # the wait has started (its 30 s count from now)
        await asyncio.sleep(0)
    await clock.advance(29.9)
    assert not waiting.done()
    await clock.advance(0.1)
    assert await waiting is False
    assert clock.now_ms() == 31_000
    stop.set()
    assert await wait_for_stop(stop, 30, clock) is True
    assert await until_stopped(stop, asyncio.sleep(10)) is False
