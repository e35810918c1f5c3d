"""The process-wide REST rate limiter: pacing, priorities, and the 429 penalty box.

Bitfinex limits REST per IP (30 candle requests a minute, then a ban of about 60 s), so every
REST call in the process goes through one `RateLimiter`, built by the daemon from settings:

- at most one request *start* per `delay` seconds, across all callers;
- waiting callers are served by priority (URGENT, NORMAL, BULK), then first come, first served;
- when a call raises `RateLimited`, nobody starts a request until the penalty ends:
  max(min_backoff, backoff), where backoff starts at initial_backoff and doubles up to
  max_backoff with each further 429; the call is retried up to max_retries times, then the
  `RateLimited` propagates. A success resets the backoff.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, TypeVar

from market_data.errors import RateLimited

log = logging.getLogger(__name__)

T = TypeVar("T")


class Priority(IntEnum):
    URGENT = 0  # WebSocket catch-up, repair of recent gaps
    NORMAL = 1  # the update loop, gap repair
    BULK = 2  # deep backfill pages


class RateLimitSettings(Protocol):
    """The Settings fields the limiter reads (config.Settings has them)."""

    @property
    def rate_limit_delay(self) -> float: ...
    @property
    def rate_limit_max_retries(self) -> int: ...
    @property
    def rate_limit_initial_backoff(self) -> float: ...
    @property
    def rate_limit_min_backoff_seconds(self) -> float: ...
    @property
    def rate_limit_max_backoff(self) -> float: ...


@dataclass(slots=True)
class LimiterStats:
    """Read by the metrics collector at scrape time. Times are on the limiter's clock."""

    requests: int = 0  # request starts granted
    rate_limited: int = 0  # calls that raised RateLimited
    gave_up: int = 0  # calls that ran out of retries
    waited_seconds: float = 0.0  # summed over callers
    current_backoff: float = 0.0
    penalty_until: float = 0.0
    waiting: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in Priority})


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    seq: int
    wake: asyncio.Event = field(compare=False, default_factory=asyncio.Event)


class RateLimiter:
    """One per process; see the module docstring. `now`/`sleep` are injectable for tests."""

    def __init__(
        self,
        delay: float,
        max_retries: int,
        initial_backoff: float,
        min_backoff: float,
        max_backoff: float,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if delay < 0 or max_retries < 0 or initial_backoff < 0 or min_backoff < 0:
            raise ValueError("rate limit settings must not be negative")
        self.delay = delay
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._now = now
        self._sleep = sleep
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()
        self._last_start = -math.inf
        self._penalty_after = 0  # number of request starts when the last penalty began
        self.stats = LimiterStats()

    @classmethod
    def from_settings(
        cls,
        settings: RateLimitSettings,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> RateLimiter:
        return cls(
            settings.rate_limit_delay,
            settings.rate_limit_max_retries,
            settings.rate_limit_initial_backoff,
            settings.rate_limit_min_backoff_seconds,
            settings.rate_limit_max_backoff,
            now=now,
            sleep=sleep,
        )

    def penalty_remaining(self) -> float:
        """Seconds until requests may start again after a 429 (0 when not penalised)."""
        return max(0.0, self.stats.penalty_until - self._now())

    async def call(self, fn: Callable[[], Awaitable[T]], priority: Priority = Priority.NORMAL) -> T:
        """Wait for a turn, run `fn()`, and retry it after the penalty when it is rate limited."""
        seq = next(self._seq)  # kept across retries: a retried call keeps its place in line
        attempt = 0
        while True:
            started = await self._acquire(priority, seq)
            try:
                result = await fn()
            except RateLimited:
                attempt += 1
                self._penalise(started, attempt)
                if attempt > self.max_retries:
                    self.stats.gave_up += 1
                    log.error("Rate limited %d times in a row; giving up on this request", attempt)
                    raise
                continue
            if self.stats.current_backoff > 0 and started > self._penalty_after:
                log.info("Rate limit recovered; requests resume every %.1f s", self.delay)
                self.stats.current_backoff = 0.0
            return result

    def _penalise(self, started: int, attempt: int) -> None:
        self.stats.rate_limited += 1
        # Requests that were already in flight when the penalty began are part of the same
        # storm: they must not double the backoff again.
        if started > self._penalty_after or self.stats.current_backoff == 0:
            backoff = self.stats.current_backoff
            backoff = self.initial_backoff if backoff == 0 else backoff * 2
            self.stats.current_backoff = min(backoff, self.max_backoff)
            now = self._now()
            self._penalty_after = self.stats.requests
            wait = max(self.min_backoff, self.stats.current_backoff)
            self.stats.penalty_until = max(self.stats.penalty_until, now + wait)
            log.warning(
                "Rate limited by the exchange (attempt %d of %d): all requests wait %.1f s",
                attempt,
                self.max_retries + 1,
                wait,
            )
        self._wake_head()

    def _next_start(self) -> float:
        return max(self._last_start + self.delay, self.stats.penalty_until)

    def _wake_head(self) -> None:
        if self._queue:
            self._queue[0].wake.set()

    async def _acquire(self, priority: Priority, seq: int) -> int:
        """Wait until first in line and the slot has come; return this start's number."""
        waiter = _Waiter(int(priority), seq)
        heapq.heappush(self._queue, waiter)
        self.stats.waiting[priority.name] += 1
        entered = self._now()
        try:
            while True:
                if self._queue[0] is not waiter:
                    waiter.wake.clear()
                    await waiter.wake.wait()
                    continue
                wait = self._next_start() - self._now()
                if wait <= 0:
                    break
                # First in line, sleeping until the slot. A more urgent caller arriving now
                # becomes the head and sleeps for the same slot; whoever is head when it
                # opens takes it, and this one goes back to waiting for its wake-up.
                await self._sleep(wait)
        except BaseException:
            self._leave(waiter, priority)
            raise
        now = self._now()
        self._leave(waiter, priority)
        self._last_start = now
        self.stats.requests += 1
        self.stats.waited_seconds += now - entered
        return self.stats.requests

    def _leave(self, waiter: _Waiter, priority: Priority) -> None:
        self._queue.remove(waiter)
        heapq.heapify(self._queue)
        self.stats.waiting[priority.name] -= 1
        self._wake_head()
