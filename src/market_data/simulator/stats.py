"""What the simulator saw and did, in plain counters that tests read."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

REST_LOG_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class RestRecord:
    at: float  # time.time() of the answer
    endpoint: str  # candles_hist, candles_last, conf, platform_status, unknown
    outcome: str  # ok, rate_limited, banned, storm, server_error, bad_request, not_found
    status: int
    peer: str
    target: str = ""  # the request's path and query (`/v2/candles/trade:1h:tBTCUSD/hist?...`)


@dataclass(slots=True)
class SimStats:
    rest_log: deque[RestRecord] = field(default_factory=lambda: deque(maxlen=REST_LOG_SIZE))
    rest_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    ws_opened: int = 0
    ws_refused: int = 0
    ws_closed: int = 0
    ws_active: int = 0
    ws_messages_sent: int = 0
    ws_updates_sent: int = 0
    ws_heartbeats_sent: int = 0
    ws_subscriptions: int = 0
    ws_unsubscriptions: int = 0
    ws_errors_sent: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)

    def record_rest(
        self, endpoint: str, outcome: str, status: int, peer: str, target: str = ""
    ) -> None:
        self.rest_log.append(RestRecord(time.time(), endpoint, outcome, status, peer, target))
        self.rest_counts[(endpoint, outcome)] += 1

    def rest_requests(
        self, endpoint: str | None = None, outcome: str | None = None, since: float | None = None
    ) -> int:
        """REST answers matching the filters; `since` is a time.time() value."""
        if since is None:
            return sum(
                n
                for (e, o), n in self.rest_counts.items()
                if (endpoint is None or e == endpoint) and (outcome is None or o == outcome)
            )
        return sum(
            1
            for r in self.rest_log
            if r.at >= since
            and (endpoint is None or r.endpoint == endpoint)
            and (outcome is None or r.outcome == outcome)
        )
