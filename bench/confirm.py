"""Confirming the no-trade periods of quiet watched series: requests per series an hour, and how
long a period waits for its confirmation.

    .venv/bin/python bench/confirm.py                   # 300 pairs x (1m, 1h), delay 2 s and 6 s
    .venv/bin/python bench/confirm.py --pairs 10 --delay 2 --hours 6

Virtual time, as bench/reconcile.py: the real `FinalCheck` loop, `UncheckedFinals` and
`RateLimiter` run on one virtual clock. Every series is watched and never trades (the worst case
for the budget: nothing but confirmations). The REST page is stood in for by a request that waits
its turn on the limiter and proves what a real page of a quiet series proves: every period but
the newest ended one (which the next check proves). Printed, after the warm-up (steady state):
requests per series an hour, the most a series made within any hour, the longest a closed period
waited for a page that shows it (a candle the stream missed is written then), and the longest the
oldest pending period waited for its proof (recorded empty then).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import Awaitable
from typing import TypeVar

from market_data.models import SeriesKey
from market_data.rate_limiter import Priority, RateLimiter
from market_data.services.live.final_check import FinalCheck, UncheckedFinals
from market_data.services.live.ingestion import DEFAULT_GRACE_SECONDS, RECONCILE_BUDGET_SHARE
from market_data.services.range_check import RangeCheckResult
from market_data.timeframes import align, next_open, previous_open

T0_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
T = TypeVar("T")


class VirtualClock:
    """Seconds since the epoch that move only when someone sleeps."""

    def __init__(self, start_s: float) -> None:
        self.t = start_s

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        return await awaitable

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class QuietPages:
    """One request per check on the limiter; proves all but the newest ended period."""

    def __init__(self, limiter: RateLimiter, clock: VirtualClock, steady_ms: int) -> None:
        self.limiter = limiter
        self.clock = clock
        self.steady_ms = steady_ms
        self.starts: dict[SeriesKey, list[int]] = defaultdict(list)
        self.compared_to: dict[SeriesKey, int] = {}  # newest period a check compared
        self.longest_wait_ms = 0  # the oldest pending period's, until its proof
        self.longest_compare_ms = 0  # a period's, until a page showed it (a missed candle)

    async def check(
        self, series: SeriesKey, pair: str, start_ms: int, end_ms: int, *, closed_before_ms: int
    ) -> RangeCheckResult:
        self.starts[series].append(self.clock.now_ms())
        await self.limiter.call(_page, Priority.NORMAL)
        now = self.clock.now_ms()
        tf = series.timeframe
        newest_ended = previous_open(align(closed_before_ms, tf), tf)
        first_new = max(start_ms, next_open(self.compared_to.get(series, 0), tf))
        self.compared_to[series] = max(end_ms, self.compared_to.get(series, 0))
        if now >= self.steady_ms:  # steady state only: the first round is a backlog
            self.longest_wait_ms = max(self.longest_wait_ms, now - next_open(start_ms, tf))
            if first_new <= end_ms:
                compare = now - next_open(first_new, tf)
                self.longest_compare_ms = max(self.longest_compare_ms, compare)
        left = (newest_ended, newest_ended) if end_ms >= newest_ended else None
        return RangeCheckResult(series, start_ms, end_ms, 0, 0, 0, None, left)


async def _page() -> None:
    return None


async def run(pairs: int, delay: float, hours: float, warmup: float) -> None:
    series = [SeriesKey(f"S{i:04d}USD", tf) for i in range(pairs) for tf in ("1m", "1h")]
    unchecked = UncheckedFinals()
    clock = VirtualClock(T0_S)
    limiter = RateLimiter(delay, 3, 1.0, 60.0, 600.0, now=clock.now, sleep=clock.sleep)
    steady_ms = int((T0_S + warmup * 3600) * 1000)
    pages = QuietPages(limiter, clock, steady_ms)
    check = FinalCheck(
        pages,  # type: ignore[arg-type]  # a stand-in with the same check() signature
        {key: key.symbol for key in series},
        unchecked,
        batch_age_ms=30_000,
        spacing_s=delay / RECONCILE_BUDGET_SHARE,
        grace_ms=int(DEFAULT_GRACE_SECONDS * 1000),
        clock_ms=clock.now_ms,
        clock=clock,
        tick_s=5.0,
    )
    check.watch(series)
    stop = asyncio.Event()
    loop = asyncio.create_task(check.run(stop))
    end_s = T0_S + hours * 3600
    while clock.now() < end_s:
        await asyncio.sleep(0)
    stop.set()
    await loop
    steady = [sum(1 for t in starts if t >= steady_ms) for starts in pages.starts.values()]
    per_hour = sum(steady) / len(series) / (hours - warmup)
    worst = max(
        sum(1 for t in starts if s <= t < s + HOUR_MS)
        for starts in pages.starts.values()
        for s in starts
        if s >= steady_ms
    )
    print(
        f"  {len(series)} series, RATE_LIMIT_DELAY={delay:g} s: {per_hour:.2f} requests per "
        f"series an hour (steady), at most {worst} within any hour; a closed period waits at "
        f"most {pages.longest_compare_ms / 60_000:.1f} min for a page to show it (a missed "
        f"candle), {pages.longest_wait_ms / 60_000:.1f} min for its proof (empty)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--delay", type=float, action="append", help="RATE_LIMIT_DELAY (2, 6)")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of stream (virtual)")
    parser.add_argument("--warmup", type=float, default=2.0, help="hours before steady state")
    args = parser.parse_args()
    for delay in args.delay or [2.0, 6.0]:
        await run(args.pairs, delay, args.hours, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
