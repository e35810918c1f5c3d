"""Pacing and retry helpers for the WebSocket shards (and the services around them)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any


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


class Backoff:
    """Exponential delays with jitter between `initial` and `maximum`."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = max(0.0, initial)
        self.maximum = max(self.initial, maximum)
        self.attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        # Jitter so shards dropped together do not reconnect in lock-step.
        return float(max(self.initial, base * random.uniform(0.5, 1.0)))

    def reset(self) -> None:
        self.attempt = 0


class ConnectionPacer:
    """At most `per_minute` connection attempts in any sliding minute, shared by every shard."""

    def __init__(self, per_minute: int, penalty: float, window: float = 61.0) -> None:
        self._per_minute = max(1, per_minute)
        self._window = window
        self._penalty = penalty
        self._starts: deque[float] = deque(maxlen=self._per_minute)
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = self._blocked_until - now
                if len(self._starts) == self._per_minute:
                    wait = max(wait, self._starts[0] + self._window - now)
                if wait <= 0:
                    self._starts.append(now)
                    return
                await asyncio.sleep(wait)

    def penalize(self) -> None:
        self._blocked_until = time.monotonic() + self._penalty
