"""The toolkit every loop uses: job rows, stop-aware retries with backoff, and clocks.

- `recorded_job(store, JobType.X, ...)`: one `ingestion_jobs` row per unit of work. The row is
  created on entry and finished on exit: `success` (or what the body set) with its counts; on
  an exception `failed`, on cancellation `cancelled`, with the error as `last_error`. When the
  database refuses that last write the failure is logged and the original exception goes on.
- `Backoff` and `retry(...)`: jittered exponential delays, and a loop that retries a step until
  it succeeds, runs out of attempts, or the stop event is set (it never sleeps through a stop).
- `Clock`: monotonic seconds, wall-clock epoch ms and sleeping, injectable so tests move time
  by hand (`VirtualClock`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from market_data.errors import MarketDataError
from market_data.models import JobStatus
from market_data.timeframes import now_ms as wall_now_ms

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 500  # `last_error` of a job row


# --- clocks ---------------------------------------------------------------------------------


class Clock(Protocol):
    """Time as a part sees it. Production uses `SYSTEM_CLOCK`; tests a `VirtualClock`."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, durations)."""

    def now_ms(self) -> int:
        """Wall clock, epoch milliseconds UTC (candle times, finality)."""

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        """`awaitable`'s result, or TimeoutError once `seconds` have passed (the
        awaitable is then cancelled)."""


class SystemClock:
    """The real clocks; `now_ms` may be replaced (e.g. by the exchange's time in tests)."""

    def __init__(self, now_ms: Callable[[], int] = wall_now_ms) -> None:
        self._now_ms = now_ms

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return self._now_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(max(0.0, seconds)):
            return await awaitable


SYSTEM_CLOCK = SystemClock()


class VirtualClock:
    """A clock that moves only when told to (`await clock.advance(seconds)`).

    Sleepers and `wait` timeouts wake when `advance` passes their deadline, in deadline order;
    the wall clock moves with the monotonic one. Nothing here depends on how long the test
    machine takes, so a test states the time it means instead of sleeping for it.
    """

    def __init__(self, start_ms: int = 0, start_monotonic: float = 1_000.0) -> None:
        self._start_ms = start_ms
        self._start = start_monotonic
        self._now = start_monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def now_ms(self) -> int:
        return self._start_ms + round((self._now - self._start) * 1000)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        work = asyncio.ensure_future(awaitable)
        timer = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, timer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, timer, return_exceptions=True)
        if work.done() and not work.cancelled():
            return work.result()
        raise TimeoutError

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper due on the way (and letting it run)."""
        target = self._now + max(0.0, seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()

    @property
    def sleepers(self) -> int:
        """Sleeps pending (a test can wait for a part to reach its next wait)."""
        return sum(1 for *_, f in self._sleepers if not f.done())


async def _settle(rounds: int = 20) -> None:
    # Let woken tasks run up to their next await; I/O they start finishes on its own time.
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- waiting on the stop event ----------------------------------------------------------------


async def wait_for_stop(stop: asyncio.Event, seconds: float, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Wait up to `seconds` for `stop`; True when it is set. Use instead of sleep."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        await clock.wait(stop.wait(), seconds)
    return stop.is_set()


async def until_stopped(stop: asyncio.Event, awaitable: Coroutine[Any, Any, Any]) -> bool:
    """Run `awaitable` unless `stop` is set first; True when it completed."""
    if stop.is_set():
        awaitable.close()
        return False
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((work, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stopper):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, stopper, return_exceptions=True)
    if work.cancelled():
        return False
    error = work.exception()
    if error is not None:
        raise error
    return True


# --- backoff and retry ------------------------------------------------------------------------


class Backoff:
    """Exponential delays between `initial` and `maximum`, with jitter (half to full delay).

    Jitter keeps parts that failed together (shards dropped by one outage, loops waiting on one
    database) from retrying in lock-step. `jitter=False` gives the plain doubling sequence.
    """

    def __init__(self, initial: float, maximum: float, *, jitter: bool = True) -> None:
        self.initial = max(0.0, initial)
        self.maximum = max(self.initial, maximum)
        self.jitter = jitter
        self.attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        if not self.jitter:
            return float(base)
        return float(max(self.initial, base * random.uniform(0.5, 1.0)))

    def reset(self) -> None:
        self.attempt = 0


class Stopped(Exception):
    """`retry` gave up because the stop event was set before the step succeeded."""


OnRetry = Callable[[BaseException, int, float], None]  # (error, failures so far, next delay)


async def retry(
    step: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    stop: asyncio.Event | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    attempts: int | None = None,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> T:
    """Run `step()` until it returns, backing off between failures of type `retry_on`.

    Raises `Stopped` when `stop` is set before a success (checked before every attempt and
    during every wait), the last error once `attempts` (None: no limit) have failed, and any
    other error at once. `on_retry` is called before each wait (for the log line). `sleep`
    replaces the stop-aware wait (a caller with its own pacing, e.g. an injected sleep).
    """
    failures = 0
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            return await step()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            delay = backoff.next()
            if on_retry is not None:
                on_retry(exc, failures, delay)
        if sleep is not None:
            await sleep(delay)
        elif stop is not None:
            if await wait_for_stop(stop, delay, clock):
                raise Stopped
        else:
            await clock.sleep(delay)


# --- job rows ---------------------------------------------------------------------------------


class JobStore(Protocol):
    """The two Store methods a job row needs (storage.base.Store has them)."""

    async def create_job(
        self, job_type: str, symbol: str | None = None, timeframe: str | None = None
    ) -> int: ...

    async def finish_job(
        self, job_id: int, status: str, candles_fetched: int = 0, last_error: str | None = None
    ) -> None: ...


@dataclass(slots=True)
class JobRecord:
    """The job being recorded; the body sets `candles`, and `status`/`error` when it decides
    the outcome itself (a run that handled its own failure, a skipped run)."""

    id: int
    status: JobStatus = JobStatus.SUCCESS
    candles: int = 0
    error: str | None = None

    def fail(self, error: str | None) -> None:
        self.status, self.error = JobStatus.FAILED, error and error[:MAX_ERROR_CHARS]

    def cancel(self, error: str | None = None) -> None:
        self.status, self.error = JobStatus.CANCELLED, error and error[:MAX_ERROR_CHARS]


def describe(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """`Type: message`, as job rows, reports and the daemon's state carry errors."""
    return f"{type(exc).__name__}: {exc}"[:limit]


@contextlib.asynccontextmanager
async def recorded_job(
    store: JobStore,
    job_type: str,
    symbol: str | None = None,
    timeframe: str | None = None,
    *,
    logger: logging.Logger | None = None,
    label: str = "job",
) -> AsyncIterator[JobRecord]:
    """Create a job row, run the body, finish the row (see the module docstring).

    On an exception the row is finished `failed` (`cancelled` for a cancellation or other
    BaseException) with the error text and the candles counted so far, and the exception
    propagates. If that write fails too, it is logged on `logger` and not raised over the
    original error (`label` names the job in that line). A failing write on the success path
    propagates: the run did not complete.
    """
    job = JobRecord(await store.create_job(job_type, symbol, timeframe))
    try:
        yield job
    except BaseException as exc:
        status = JobStatus.FAILED if isinstance(exc, Exception) else JobStatus.CANCELLED
        error = describe(exc) if isinstance(exc, Exception) else "interrupted"
        try:
            # Shielded: a cancelled run still gets its row closed.
            await asyncio.shield(store.finish_job(job.id, status, job.candles, error))
        except (MarketDataError, asyncio.CancelledError) as finish_exc:
            (logger or log).warning(
                "Could not record the end of %s %d: %s", label, job.id, describe(finish_exc)
            )
        raise
    await store.finish_job(job.id, job.status, job.candles, job.error)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`, nothing more (only possible in the main thread)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
