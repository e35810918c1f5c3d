"""Per-client request limits over a rolling window, with a ban for those who go over."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

_MAX_CLIENTS = 10_000


class RollingLimit:
    """At most `limit` admitted events per `window` seconds per client; `limit=0` disables it.

    Going over the limit bans the client for `ban` seconds (0: no ban, just refused).
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        ban: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.ban_seconds = ban
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def banned(self, client: str) -> bool:
        return self._clock() < self._banned_until.get(client, 0.0)

    def ban(self, client: str, seconds: float) -> None:
        until = self._clock() + seconds
        self._banned_until[client] = max(until, self._banned_until.get(client, 0.0))
        if len(self._banned_until) > _MAX_CLIENTS:
            self._banned_until.pop(next(iter(self._banned_until)))

    def admit(self, client: str) -> bool:
        """Count one event; False when it is over the limit (and the client is then banned)."""
        if self.limit <= 0:
            return True
        now = self._clock()
        hits = self._hits.get(client)
        if hits is None:
            if len(self._hits) >= _MAX_CLIENTS:
                self._hits.pop(next(iter(self._hits)))
            hits = self._hits[client] = deque(maxlen=self.limit)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            if self.ban_seconds > 0:
                self.ban(client, self.ban_seconds)
            return False
        hits.append(now)
        return True
