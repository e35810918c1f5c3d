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

Each delay is run twice: "own checks" checks every series with its own requests (as before
sibling confirmation), "1h from the 1m checks" confirms each 1h series from its pair's 1m checks
(`sibling.py`: the real `SiblingConfirm`, over a stand-in store of quiet pairs holding no
candle; a 1h period is compared, and proven, when the stand-in store is read for it).

Measured (300 pairs, 6 virtual hours, 2 of warm-up):

    delay  mode        requests/series/h  missed candle waits (1m, 1h)  proof waits (1m, 1h)
    2 s    own checks  1.00 (300 + 300)   60.0, 26.9 min                61.0, 87.0 min
    2 s    from 1m     0.50 (300 + 0)     60.0, 61.0 min                61.0, 61.0 min
    6 s    own checks  0.67 (205 + 195)   90.0, 146.8 min               91.0, 150.0 min
    6 s    from 1m     0.50 (300 + 0)     60.0, 60.9 min                61.0, 60.9 min
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
from market_data.services.live.sibling import SiblingConfirm
from market_data.services.range_check import RangeCheckResult
from market_data.timeframes import align, expected_opens, next_open, previous_open

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
        # Per timeframe: the oldest pending period's wait until its proof, and a period's until
        # a page showed it (a missed candle is written then).
        self.longest_wait_ms: dict[str, int] = defaultdict(int)
        self.longest_compare_ms: dict[str, int] = defaultdict(int)

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
            wait = now - next_open(start_ms, tf)
            self.longest_wait_ms[tf] = max(self.longest_wait_ms[tf], wait)
            if first_new <= end_ms:
                compare = now - next_open(first_new, tf)
                self.longest_compare_ms[tf] = max(self.longest_compare_ms[tf], compare)
        left = (newest_ended, newest_ended) if end_ms >= newest_ended else None
        return RangeCheckResult(series, start_ms, end_ms, 0, 0, 0, None, left)


class QuietStore:
    """The store as sibling confirmation sees it for quiet pairs: no candle anywhere. Reading a
    coarser series' candles is the comparison: when each period was compared (and proven)."""

    def __init__(self, pages: QuietPages) -> None:
        self.pages = pages
        self.empty_periods = 0

    async def candles_in_range(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> list[object]:
        tf = series.timeframe
        now = self.pages.clock.now_ms()
        if tf != "1m" and now >= self.pages.steady_ms:
            for period in expected_opens(start_ms, end_ms, tf):
                compare = now - next_open(period, tf)
                self.pages.longest_compare_ms[tf] = max(self.pages.longest_compare_ms[tf], compare)
                self.pages.longest_wait_ms[tf] = max(self.pages.longest_wait_ms[tf], compare)
        return []

    async def add_empty_ranges(self, series: SeriesKey, ranges: list[tuple[int, int]]) -> None:
        self.empty_periods += len(ranges)


async def _page() -> None:
    return None


async def _no_write(candles: object) -> None:
    raise AssertionError("a quiet pair has nothing to write")


async def run(pairs: int, delay: float, hours: float, warmup: float, sibling: bool) -> None:
    series = [SeriesKey(f"S{i:04d}USD", tf) for i in range(pairs) for tf in ("1m", "1h")]
    unchecked = UncheckedFinals()
    clock = VirtualClock(T0_S)
    limiter = RateLimiter(delay, 3, 1.0, 60.0, 600.0, now=clock.now, sleep=clock.sleep)
    steady_ms = int((T0_S + warmup * 3600) * 1000)
    pages = QuietPages(limiter, clock, steady_ms)
    pairs_map = {key: key.symbol for key in series}
    confirm = None
    if sibling:
        store = QuietStore(pages)
        confirm = SiblingConfirm(store, _no_write, unchecked, pairs_map)  # type: ignore[arg-type]
    check = FinalCheck(
        pages,  # type: ignore[arg-type]  # a stand-in with the same check() signature
        pairs_map,
        unchecked,
        batch_age_ms=30_000,
        spacing_s=delay / RECONCILE_BUDGET_SHARE,
        grace_ms=int(DEFAULT_GRACE_SECONDS * 1000),
        clock_ms=clock.now_ms,
        clock=clock,
        tick_s=5.0,
        sibling=confirm,
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
    by_tf = {
        tf: sum(
            1
            for k, starts in pages.starts.items()
            if k.timeframe == tf
            for t in starts
            if t >= steady_ms
        )
        for tf in ("1m", "1h")
    }
    hours_steady = hours - warmup

    def minutes(waits: dict[str, int]) -> str:
        return ", ".join(f"{waits[tf] / 60_000:.1f} min ({tf})" for tf in ("1m", "1h"))

    print(
        f"  {len(series)} series, RATE_LIMIT_DELAY={delay:g} s, "
        f"{'1h from the 1m checks' if sibling else 'own checks'}: "
        f"{per_hour:.2f} requests per series an hour (steady; "
        f"{by_tf['1m'] / hours_steady:.0f} for 1m, {by_tf['1h'] / hours_steady:.0f} for 1h an "
        f"hour), at most {worst} within any hour; a closed period waits at most "
        f"{minutes(pages.longest_compare_ms)} to be compared (a missed candle), "
        f"{minutes(pages.longest_wait_ms)} for its proof (empty)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--delay", type=float, action="append", help="RATE_LIMIT_DELAY (2, 6)")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of stream (virtual)")
    parser.add_argument("--warmup", type=float, default=2.0, help="hours before steady state")
    args = parser.parse_args()
    for delay in args.delay or [2.0, 6.0]:
        for sibling in (False, True):
            await run(args.pairs, delay, args.hours, args.warmup, sibling)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
