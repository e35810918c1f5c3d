"""The check of stream-finalized candles against REST: requests used and how long finals wait.

    .venv/bin/python bench/reconcile.py                    # 10 and 600 series, delay 2 s and 6 s
    .venv/bin/python bench/reconcile.py --series 10 --delay 2 --hours 3

Virtual time: the real `FinalCheck` loop, `UncheckedFinals` and `RateLimiter` run on one virtual
clock, so hours pass in a second. Every series is 1m; at each minute (plus the writer's grace)
every series gets one candle finalized from the stream. The REST page is stood in for by a
request that waits its turn on the limiter (what a page costs in budget; its content does not
change the schedule). The check is the limiter's only user, so it gets its whole share.

Printed per case: requests an hour, candles covered per request, the share of the REST budget
used, the longest a final candle waited after its period closed (steady state, after the first
hour), and once the stream stops, how long until every final is checked. The same figures for
the pass it replaced (every series once every max(300 s, 4 x series x delay), one request per
series per pass) are computed from that rule.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from market_data.models import SeriesKey
from market_data.rate_limiter import Priority, RateLimiter
from market_data.services.live.final_check import FinalCheck, UncheckedFinals
from market_data.services.live.ingestion import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_RECONCILE_SECONDS,
    RECONCILE_BUDGET_SHARE,
)
from market_data.services.range_check import RangeCheckResult

MINUTE_S = 60.0
T0_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a minute boundary


T = TypeVar("T")


class VirtualClock:
    """Seconds since the epoch that move only when someone sleeps (a `lifecycle.Clock` for the
    check; `now`/`sleep` for the limiter)."""

    def __init__(self, start_s: float, on_advance: Callable[[float, float], None]) -> None:
        self.t = start_s
        self._on_advance = on_advance

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        return await awaitable  # the check never waits with a timeout

    def now_ms(self) -> int:
        return int(self.t * 1000)

    async def sleep(self, seconds: float) -> None:
        before = self.t
        self.t += max(0.0, seconds)
        self._on_advance(before, self.t)
        await asyncio.sleep(0)


class PagesOnTheLimiter:
    """Stands in for RangeChecker: one request per check, paced by the real limiter."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.requests = 0
        self.candles = 0

    async def check(
        self, series: SeriesKey, pair: str, start_ms: int, end_ms: int, *, closed_before_ms: int
    ) -> RangeCheckResult:
        await self.limiter.call(_page, Priority.NORMAL)
        covered = (end_ms - start_ms) // 60_000 + 1
        self.requests += 1
        self.candles += covered
        return RangeCheckResult(series, start_ms, end_ms, covered, 0, 0, None)


async def _page() -> None:
    return None


@dataclass(slots=True)
class Figures:
    requests_per_hour: float
    candles_per_request: float
    budget_share: float
    max_wait_s: float
    drain_s: float


async def run_check(n_series: int, delay: float, hours: float, batch_s: float) -> Figures:
    series = [SeriesKey(f"S{i:04d}USD", "1m") for i in range(n_series)]
    unchecked = UncheckedFinals()
    stream_until = T0_S + hours * 3600
    waits: list[float] = []
    state: dict[str, FinalCheck] = {}

    def on_advance(before: float, after: float) -> None:
        # Each minute boundary E crossed (plus the grace) finalizes the candle [E - 60 s, E).
        first = math.floor((before - DEFAULT_GRACE_SECONDS) / MINUTE_S) + 1
        last = math.floor((min(after, stream_until) - DEFAULT_GRACE_SECONDS) / MINUTE_S)
        for boundary in range(first, last + 1):
            ts = int((boundary - 1) * MINUTE_S * 1000)
            for key in series:
                unchecked.note(key, ts)
        if after >= T0_S + 3600 and "check" in state:
            waits.append(state["check"].oldest_age_ms() / 1000)

    clock = VirtualClock(T0_S, on_advance)
    limiter = RateLimiter(delay, 3, 1.0, 60.0, 600.0, now=clock.now, sleep=clock.sleep)
    pages = PagesOnTheLimiter(limiter)
    check = FinalCheck(
        pages,  # type: ignore[arg-type]  # a stand-in with the same check() signature
        {key: key.symbol for key in series},
        unchecked,
        batch_age_ms=int(batch_s * 1000),
        spacing_s=delay / RECONCILE_BUDGET_SHARE,
        grace_ms=int(DEFAULT_GRACE_SECONDS * 1000),
        clock_ms=clock.now_ms,
        clock=clock,
    )
    state["check"] = check
    stop = asyncio.Event()

    async def until_drained() -> float:
        while clock.now() < stream_until or len(unchecked):
            await asyncio.sleep(0)
        stop.set()
        return clock.now() - stream_until

    loop = asyncio.create_task(check.run(stop))
    drain = await until_drained()
    await loop
    requests_at_end = pages.requests
    elapsed_h = (clock.now() - T0_S) / 3600
    return Figures(
        requests_per_hour=requests_at_end / elapsed_h,
        candles_per_request=pages.candles / max(1, pages.requests),
        budget_share=requests_at_end * delay / (clock.now() - T0_S) if delay else 0.0,
        max_wait_s=max(waits, default=0.0),
        drain_s=drain,
    )


def old_pass(n_series: int, delay: float) -> Figures:
    """The replaced rule: a pass every max(300, 4 N delay) s, one request per series."""
    interval = max(300.0, 4 * n_series * delay)
    pass_s = n_series * delay
    # A candle that closed just after a series was visited waits a whole interval for the next
    # visit; the last series of a pass is visited pass_s after the pass starts.
    max_wait = interval + DEFAULT_GRACE_SECONDS + min(pass_s, interval)
    return Figures(
        requests_per_hour=n_series * 3600 / interval,
        candles_per_request=interval / MINUTE_S,
        budget_share=pass_s / interval,
        max_wait_s=max_wait,
        drain_s=interval + pass_s,
    )


def show(label: str, f: Figures) -> None:
    print(
        f"  {label:<6} {f.requests_per_hour:8.0f} req/h {f.candles_per_request:8.1f} candles/req "
        f"{f.budget_share:6.0%} of budget   longest wait {f.max_wait_s:7.0f} s   "
        f"drained {f.drain_s:6.0f} s after the stream stopped"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, action="append", help="default: 10 and 600")
    parser.add_argument("--delay", type=float, action="append", help="RATE_LIMIT_DELAY (2, 6)")
    parser.add_argument("--hours", type=float, default=3.0, help="hours of stream (virtual)")
    parser.add_argument(
        "--batch", type=float, default=DEFAULT_RECONCILE_SECONDS, help="seconds a final waits"
    )
    args = parser.parse_args()
    print(
        f"1m series; a final waits >= {args.batch:g} s; the check starts at most "
        f"one request per RATE_LIMIT_DELAY / {RECONCILE_BUDGET_SHARE:.2f}"
    )
    for delay in args.delay or [2.0, 6.0]:
        for n in args.series or [10, 600]:
            print(f"{n} series, RATE_LIMIT_DELAY={delay:g} s ({60 / delay:.0f} requests a minute)")
            show("check", await run_check(n, delay, args.hours, args.batch))
            show("old", old_pass(n, delay))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
