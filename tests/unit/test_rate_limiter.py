"""The global rate limiter on a virtual clock: no real sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from market_data.errors import ExchangeUnavailable, RateLimited
from market_data.rate_limiter import Priority, RateLimiter


class VirtualClock:
    """`now`/`sleep` for the limiter. When every task is idle, time jumps to the next timer."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.t + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def run(self) -> None:
        while True:
            for _ in range(30):  # let every runnable task settle before time moves
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)
            if self._timers:
                target, _, fut = heapq.heappop(self._timers)
                self.t = max(self.t, target)
                fut.set_result(None)


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    vc = VirtualClock()
    runner = asyncio.create_task(vc.run())
    yield vc
    runner.cancel()


def make(
    clock: VirtualClock,
    *,
    delay: float = 6.0,
    max_retries: int = 10,
    initial: float = 2.0,
    min_backoff: float = 60.0,
    max_backoff: float = 120.0,
) -> RateLimiter:
    return RateLimiter(
        delay, max_retries, initial, min_backoff, max_backoff, now=clock.now, sleep=clock.sleep
    )


def recorder(
    clock: VirtualClock, log: list[tuple[str, float]], name: str, result: object = None
) -> Callable[[], Awaitable[object]]:
    async def fn() -> object:
        log.append((name, clock.now()))
        return result

    return fn


async def test_spacing_between_request_starts(clock: VirtualClock) -> None:
    limiter = make(clock, delay=6.0)
    starts: list[tuple[str, float]] = []
    results = await asyncio.gather(
        *(limiter.call(recorder(clock, starts, f"r{i}", i)) for i in range(5))
    )
    assert results == [0, 1, 2, 3, 4]
    times = [t for _, t in starts]
    assert times[0] == 1000.0  # the first request does not wait
    assert all(b - a >= 6.0 for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] == pytest.approx(24.0)
    assert limiter.stats.requests == 5
    assert limiter.stats.waited_seconds == pytest.approx(6 + 12 + 18 + 24)


async def test_waiting_callers_served_by_priority_then_fifo(clock: VirtualClock) -> None:
    limiter = make(clock, delay=5.0)
    starts: list[tuple[str, float]] = []
    await limiter.call(recorder(clock, starts, "first"))
    order = [
        ("b1", Priority.BULK),
        ("n1", Priority.NORMAL),
        ("b2", Priority.BULK),
        ("u1", Priority.URGENT),
        ("n2", Priority.NORMAL),
        ("u2", Priority.URGENT),
    ]
    await asyncio.gather(*(limiter.call(recorder(clock, starts, n), priority=p) for n, p in order))
    assert [n for n, _ in starts] == ["first", "u1", "u2", "n1", "n2", "b1", "b2"]


async def test_urgent_arrival_overtakes_a_sleeping_bulk_caller(clock: VirtualClock) -> None:
    limiter = make(clock, delay=10.0)
    starts: list[tuple[str, float]] = []
    await limiter.call(recorder(clock, starts, "first"))
    bulk = asyncio.create_task(limiter.call(recorder(clock, starts, "bulk"), Priority.BULK))
    await clock.sleep(3.0)  # bulk is now first in line, sleeping until its slot
    assert limiter.stats.waiting["BULK"] == 1
    await limiter.call(recorder(clock, starts, "urgent"), Priority.URGENT)
    await bulk
    assert [n for n, _ in starts] == ["first", "urgent", "bulk"]
    assert starts[1][1] == pytest.approx(1010.0)
    assert starts[2][1] == pytest.approx(1020.0)


async def test_penalty_box_applies_to_everyone(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make(clock, delay=1.0, initial=2.0, min_backoff=60.0)
    starts: list[tuple[str, float]] = []
    failures = iter([True])

    async def flaky() -> str:
        starts.append(("flaky", clock.now()))
        if next(failures, False):
            raise RateLimited("429")
        return "ok"

    with caplog.at_level(logging.INFO, logger="market_data.rate_limiter"):
        results = await asyncio.gather(
            limiter.call(flaky), limiter.call(recorder(clock, starts, "other", "fine"))
        )
    assert results == ["ok", "fine"]
    assert starts[0] == ("flaky", 1000.0)
    # Nobody starts during the penalty: max(min_backoff=60, backoff=2).
    assert all(t >= 1060.0 for _, t in starts[1:])
    assert limiter.stats.rate_limited == 1
    assert limiter.stats.penalty_until == pytest.approx(1060.0)
    assert limiter.stats.current_backoff == 0.0  # reset by the success
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert "60.0 s" in warnings[0].getMessage()
    assert any(r.levelno == logging.INFO and "recovered" in r.getMessage() for r in caplog.records)


async def test_backoff_grows_caps_and_resets(clock: VirtualClock) -> None:
    limiter = make(clock, delay=0.0, initial=2.0, min_backoff=0.0, max_backoff=10.0)
    starts: list[float] = []
    remaining = [5]

    async def fails_then_ok() -> str:
        starts.append(clock.now())
        if remaining[0]:
            remaining[0] -= 1
            raise RateLimited("429")
        return "ok"

    assert await limiter.call(fails_then_ok) == "ok"
    waits = [b - a for a, b in itertools.pairwise(starts)]
    assert waits == pytest.approx([2.0, 4.0, 8.0, 10.0, 10.0])
    assert limiter.stats.current_backoff == 0.0
    remaining[0] = 1
    starts.clear()
    assert await limiter.call(fails_then_ok) == "ok"
    assert starts[1] - starts[0] == pytest.approx(2.0)  # back to the initial backoff


async def test_gives_up_after_max_retries(clock: VirtualClock) -> None:
    limiter = make(clock, delay=0.0, max_retries=3, min_backoff=60.0)
    calls = 0

    async def always_429() -> None:
        nonlocal calls
        calls += 1
        raise RateLimited("429")

    with pytest.raises(RateLimited):
        await limiter.call(always_429)
    assert calls == 4
    assert limiter.stats.gave_up == 1
    assert limiter.stats.rate_limited == 4


async def test_other_errors_propagate_without_retry(clock: VirtualClock) -> None:
    limiter = make(clock)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ExchangeUnavailable("502")

    with pytest.raises(ExchangeUnavailable):
        await limiter.call(broken)
    assert calls == 1
    assert limiter.stats.rate_limited == 0


async def test_requests_in_flight_during_a_429_do_not_double_the_backoff(
    clock: VirtualClock,
) -> None:
    limiter = make(clock, delay=1.0, initial=4.0, min_backoff=0.0, max_backoff=100.0)
    gate = asyncio.Event()
    first_attempt: dict[str, bool] = {}

    def slow_429(name: str) -> Callable[[], Awaitable[str]]:
        async def fn() -> str:
            if not first_attempt.get(name):
                first_attempt[name] = True
                await gate.wait()
                raise RateLimited("429")
            return name

        return fn

    calls = [asyncio.create_task(limiter.call(slow_429(n))) for n in ("a", "b", "c")]
    while limiter.stats.requests < 3:
        await clock.sleep(1.0)
    gate.set()
    assert await asyncio.gather(*calls) == ["a", "b", "c"]
    assert limiter.stats.rate_limited == 3
    assert limiter.stats.penalty_until == pytest.approx(1002.0 + 4.0, abs=1.0)


async def test_cancelled_waiters_do_not_wedge_the_queue(clock: VirtualClock) -> None:
    limiter = make(clock, delay=10.0)
    starts: list[tuple[str, float]] = []
    await limiter.call(recorder(clock, starts, "first"))
    head = asyncio.create_task(limiter.call(recorder(clock, starts, "head"), Priority.URGENT))
    middle = asyncio.create_task(limiter.call(recorder(clock, starts, "middle"), Priority.NORMAL))
    tail = asyncio.create_task(limiter.call(recorder(clock, starts, "tail"), Priority.BULK))
    await clock.sleep(2.0)
    head.cancel()  # first in line, sleeping until its slot
    middle.cancel()  # waiting behind it
    await tail
    assert head.cancelled()
    assert middle.cancelled()
    assert [n for n, _ in starts] == ["first", "tail"]
    assert starts[1][1] == pytest.approx(1010.0)
    assert limiter.stats.waiting == {"URGENT": 0, "NORMAL": 0, "BULK": 0}
    await limiter.call(recorder(clock, starts, "after"))
    assert starts[-1][1] == pytest.approx(1020.0)


async def test_from_settings_reads_the_settings_fields() -> None:
    class S:
        rate_limit_delay = 6.0
        rate_limit_max_retries = 10
        rate_limit_initial_backoff = 2.0
        rate_limit_min_backoff_seconds = 60.0
        rate_limit_max_backoff = 120.0

    limiter = RateLimiter.from_settings(S())
    assert (
        limiter.delay,
        limiter.max_retries,
        limiter.initial_backoff,
        limiter.min_backoff,
        limiter.max_backoff,
    ) == (6.0, 10, 2.0, 60.0, 120.0)


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateLimiter(-1.0, 1, 1.0, 1.0, 1.0)
