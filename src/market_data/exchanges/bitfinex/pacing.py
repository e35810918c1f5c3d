"""Connection pacing for the WebSocket shards (Bitfinex counts new connections per IP)."""

from __future__ import annotations

import asyncio
from collections import deque

from market_data.lifecycle import SYSTEM_CLOCK, Clock


class ConnectionPacer:
    """At most `per_minute` connection attempts in any sliding minute, shared by every shard."""

    def __init__(
        self, per_minute: int, penalty: float, window: float = 61.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._clock = clock
        self._per_minute = max(1, per_minute)
        self._window = window
        self._penalty = penalty
        self._starts: deque[float] = deque(maxlen=self._per_minute)
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                wait = self._blocked_until - now
                if len(self._starts) == self._per_minute:
                    wait = max(wait, self._starts[0] + self._window - now)
                if wait <= 0:
                    self._starts.append(now)
                    return
                await self._clock.sleep(wait)

    def penalize(self) -> None:
        self._blocked_until = self._clock.monotonic() + self._penalty
