"""Latency histograms as plain values: the store times its upserts into `UpsertTimings`, the
WebSocket writer its commits into a `Histogram`, and the metrics collector reads both."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Seconds; from a sub-millisecond SQLite flush to a 10,000-row PostgreSQL page.
UPSERT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
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
)


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket-ready counts: counts[i] observations <= bounds[i], the last is +Inf."""

    bounds: tuple[float, ...] = UPSERT_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(UPSERT_BUCKETS) + 1))
    total: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: ("0.001", n), ..., ("+Inf", total)."""
        running = 0
        result: list[tuple[str, int]] = []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


@dataclass(slots=True)
class UpsertTimings:
    seconds: Histogram = field(default_factory=Histogram)
    rows: int = 0
    errors: int = 0  # upserts that raised

    def record(self, seconds: float, rows: int) -> None:
        """One upsert that succeeded."""
        self.seconds.observe(seconds)
        self.rows += rows
