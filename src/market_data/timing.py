"""Upsert latency, measured around the store: a plain histogram the metrics collector reads.

`TimedStore` wraps any store and times `upsert_candles`; every other attribute is the wrapped
store's own, so it can stand wherever the store does.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from market_data.models import Candle
from market_data.storage.base import Store, UpsertResult

# Seconds; from a sub-millisecond SQLite flush to a 10,000-row PostgreSQL page.
UPSERT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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
    errors: int = 0


class TimedStore:
    """Delegates to `inner`, timing `upsert_candles` into `timings`."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.timings = UpsertTimings()

    async def upsert_candles(self, candles: Sequence[Candle]) -> UpsertResult:
        started = time.perf_counter()
        try:
            result = await self.inner.upsert_candles(candles)
        except Exception:
            self.timings.errors += 1
            raise
        self.timings.seconds.observe(time.perf_counter() - started)
        self.timings.rows += len(candles)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def as_store(self) -> Store:
        return cast(Store, self)
