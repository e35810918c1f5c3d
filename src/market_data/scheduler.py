"""Periodic loops with per-loop status, in the manner of arq's `poll` and saq's `upkeep`.

A `PeriodicLoop` runs one coroutine function on a fixed cadence: the first cycle after
`initial_delay`, then every `interval` measured from the previous cycle's *start* (so the cadence
does not drift by the cycle's own duration; ticks missed by a cycle that ran long are skipped, not
replayed in a burst). A failing cycle is logged and recorded, and the loop carries on. Every wait
is a wait on the stop event, so a loop notices shutdown at once; a cycle in flight when stop is set
gets a short grace period to finish, then it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from market_data.timeframes import now_ms

log = logging.getLogger(__name__)

# Consecutive failures after which /health calls a loop unhealthy.
FAILING_THRESHOLD = 3
_MAX_ERROR_CHARS = 500
_MAX_RESULT_CHARS = 300
_CANCELLED = object()


@dataclass(slots=True)
class LoopStatus:
    """What /status shows for a loop. Times are epoch ms UTC; None until it happened."""

    name: str
    interval_s: float
    initial_delay_s: float
    running: bool = False
    last_start_ms: int | None = None
    last_finish_ms: int | None = None
    last_success_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    last_result: str | None = None
    last_duration_s: float | None = None
    next_run_ms: int | None = None
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    stopped: bool = False

    @property
    def failing(self) -> bool:
        return self.consecutive_failures >= FAILING_THRESHOLD


def _summarize(result: object) -> str | None:
    if result is None:
        return None
    text = str(result)
    return text if len(text) <= _MAX_RESULT_CHARS else text[: _MAX_RESULT_CHARS - 3] + "..."


class PeriodicLoop:
    """Run `cycle()` every `interval` seconds until `stop` is set. See the module docstring."""

    def __init__(
        self,
        name: str,
        cycle: Callable[[], Awaitable[object]],
        interval: float,
        *,
        initial_delay: float = 0.0,
        grace: float = 3.0,
        summarize: Callable[[object], str | None] = _summarize,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"loop {name}: interval must be > 0, got {interval}")
        if initial_delay < 0:
            raise ValueError(f"loop {name}: initial delay must be >= 0, got {initial_delay}")
        self.name = name
        self.status = LoopStatus(name=name, interval_s=interval, initial_delay_s=initial_delay)
        self._cycle = cycle
        self._interval = interval
        self._initial_delay = initial_delay
        self._grace = grace
        self._summarize = summarize
        self._clock = clock
        self._wake = asyncio.Event()

    def trigger(self) -> None:
        """Run the next cycle now instead of at its scheduled time."""
        self._wake.set()

    def _schedule(self, due: float) -> None:
        self.status.next_run_ms = now_ms() + int(max(0.0, due - self._clock()) * 1000)

    async def _wait_until(self, due: float, stop: asyncio.Event) -> bool:
        """Wait until `due` (monotonic), a trigger or stop. True when stop is set."""
        self._schedule(due)
        stop_wait = asyncio.ensure_future(stop.wait())
        wake_wait = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {stop_wait, wake_wait},
                timeout=max(0.0, due - self._clock()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in (stop_wait, wake_wait):
                waiter.cancel()
            # Reap the cancelled waiters so none outlives this call.
            await asyncio.gather(stop_wait, wake_wait, return_exceptions=True)
        self._wake.clear()
        return stop.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        status = self.status
        log.debug(
            "Loop %s: every %.3gs, first after %.3gs",
            self.name,
            self._interval,
            self._initial_delay,
        )
        due = self._clock() + self._initial_delay
        try:
            while not await self._wait_until(due, stop):
                started = self._clock()
                await self.run_cycle(stop)
                # Next tick on the original grid, skipping ticks the cycle overran.
                due = started + self._interval
                now = self._clock()
                if due <= now:
                    missed = int((now - started) // self._interval)
                    due = started + (missed + 1) * self._interval
        finally:
            status.next_run_ms = None
            status.stopped = True

    async def run_cycle(self, stop: asyncio.Event) -> None:
        """One cycle, recorded in `status`; never raises except on cancellation."""
        status = self.status
        status.running = True
        status.last_start_ms = now_ms()
        status.next_run_ms = None
        started = self._clock()
        task = asyncio.ensure_future(self._cycle())
        try:
            result = await self._await_or_grace(task, stop)
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
            raise
        except Exception as exc:  # a failing cycle must not end the loop
            status.failures += 1
            status.consecutive_failures += 1
            status.last_error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
            status.last_error_ms = now_ms()
            level = logging.ERROR if status.failing else logging.WARNING
            log.log(
                level,
                "Loop %s failed (%d in a row): %s",
                self.name,
                status.consecutive_failures,
                status.last_error,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
        else:
            if result is _CANCELLED:
                status.last_result = "cancelled at shutdown"
            else:
                status.last_success_ms = now_ms()
                status.consecutive_failures = 0
                status.last_result = self._summarize(result)
        finally:
            status.runs += 1
            status.running = False
            status.last_finish_ms = now_ms()
            status.last_duration_s = round(self._clock() - started, 3)

    async def _await_or_grace(self, task: asyncio.Future[object], stop: asyncio.Event) -> object:
        stop_wait: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)
        if not task.done():
            # Stop was set mid-cycle: give the cycle a moment to finish its unit of work.
            await asyncio.wait({task}, timeout=self._grace)
        if not task.done():
            log.info("Loop %s: cycle still running at shutdown, cancelling it", self.name)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return _CANCELLED
        return task.result()
