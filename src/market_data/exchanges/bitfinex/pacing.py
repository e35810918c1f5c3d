"""Connection pacing for the WebSocket shards (Bitfinex counts new connections per IP)."""

from __future__ import annotations

import asyncio
import time
from collections import deque


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
