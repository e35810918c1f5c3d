"""Receive-to-commit latency of WebSocket updates: a bounded sample for quantiles (the benchmark
and /status) and a cumulative histogram for /metrics."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from market_data.timing import Histogram


def _latency_bounds() -> tuple[float, ...]:
    # 0.1 ms to ~2 min in 10 % steps: p99 within 10 % at any scale, 150 buckets.
    return tuple(0.1 * 1.1**i for i in range(150))


# Seconds, for /metrics: batches wait up to `flush_seconds` (default 2) and longer in an outage.
COMMIT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


def commit_histogram() -> Histogram:
    return Histogram(COMMIT_BUCKETS, [0] * (len(COMMIT_BUCKETS) + 1))


@dataclass(slots=True)
class LatencyHistogram:
    """Update receive -> commit latency in milliseconds, fixed buckets (bounded memory)."""

    bounds_ms: tuple[float, ...] = field(default_factory=_latency_bounds, repr=False)
    counts: list[int] = field(default_factory=lambda: [0] * 151, repr=False)
    total: int = 0
    max_ms: float = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(self.bounds_ms, ms)] += 1
        self.total += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None before any sample)."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.bounds_ms[index] if index < len(self.bounds_ms) else self.max_ms
        return self.max_ms

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds_ms) + 1)
        self.total = 0
        self.max_ms = 0.0
