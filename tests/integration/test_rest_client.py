"""BitfinexRest and the rate limiter against the simulator's real HTTP server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from market_data.errors import ExchangeRequestError, ExchangeUnavailable, RateLimited, UnknownSymbol
from market_data.exchanges.bitfinex.rest import BitfinexRest
from market_data.rate_limiter import Priority, RateLimiter
from market_data.simulator import Faults, Simulator
from market_data.timeframes import HOUR_MS, MINUTE_MS, align, next_open
from tests.plugins.sim import SimulatorFactory

pytestmark = pytest.mark.timeout(60)

# A frozen market clock, half-way through an hour, so open and closed candles are certain.
FROZEN_MS = align(int(time.time() * 1000), "1h") - 5 * HOUR_MS + 30 * MINUTE_MS


def fast_limiter(
    delay: float = 0.0,
    *,
    max_retries: int = 3,
    initial: float = 0.1,
    min_backoff: float = 0.2,
    max_backoff: float = 1.0,
) -> RateLimiter:
    return RateLimiter(delay, max_retries, initial, min_backoff, max_backoff)


@asynccontextmanager
async def client(
    sim: Simulator,
    limiter: RateLimiter | None = None,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    backoff: float = 0.01,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncIterator[BitfinexRest]:
    rest = BitfinexRest(
        sim.rest_url,
        limiter or fast_limiter(),
        timeout=timeout,
        unavailable_attempts=attempts,
        retry_backoff=backoff,
        clock_ms=sim.market.now_ms,
        sleep=sleep or asyncio.sleep,
    )
    async with rest:
        yield rest


@pytest.fixture
async def frozen(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory(clock=lambda: FROZEN_MS / 1000)


async def test_pages_forward_match_the_truth(frozen: Simulator) -> None:
    start = FROZEN_MS - 3 * HOUR_MS - 30 * MINUTE_MS
    end = FROZEN_MS - 30 * MINUTE_MS - 1  # inclusive on Bitfinex: the last closed hour's minutes
    truth = frozen.market.truth("BTCUSD", "1m", start, end + 1)
    assert len(truth) > 100
    async with client(frozen) as rest:
        got, cursor, pages = [], start, 0
        while True:
            page = await rest.fetch_candles("BTCUSD", "1m", cursor, end, limit=50)
            pages += 1
            assert page.rejected == []
            assert page.raw_count == len(page.candles)
            got.extend(page.candles)
            if page.raw_count < 50:
                break
            assert page.max_ts == page.candles[-1].ts
            cursor = next_open(page.candles[-1].ts, "1m")
            if cursor > end:  # a full page that ends on the window's last minute: nothing after
                break
    # One request per 50 candles, plus the short (or empty) page that says "no more", except
    # when a full page already reached the window's last minute.
    ends_on_last_minute = len(truth) % 50 == 0 and next_open(truth[-1].ts, "1m") > end
    assert pages == len(truth) // 50 + (0 if ends_on_last_minute else 1)
    assert got == truth  # ascending, no duplicates, field order right, all final
    assert rest.stats.requests["ok"] == pages
    assert rest.stats.rows_received == len(truth)


async def test_sort_descending_and_inclusive_bounds(frozen: Simulator) -> None:
    start = FROZEN_MS - 2 * HOUR_MS
    truth = frozen.market.truth("ETHUSD", "1m", start, FROZEN_MS - HOUR_MS)
    first, last = truth[0].ts, truth[-1].ts
    async with client(frozen) as rest:
        newest = await rest.fetch_candles("ETHUSD", "1m", first, last, limit=5, sort=-1)
        both_ends = await rest.fetch_candles("ETHUSD", "1m", first, last)
    assert [c.ts for c in newest.candles] == [c.ts for c in reversed(truth[-5:])]
    assert both_ends.candles[0].ts == first
    assert both_ends.candles[-1].ts == last
    assert len(both_ends.candles) == len(truth)


async def test_the_open_candle_is_not_final(frozen: Simulator) -> None:
    async with client(frozen) as rest:
        page = await rest.fetch_candles(
            "BTCUSD", "1h", FROZEN_MS - 3 * HOUR_MS, FROZEN_MS, priority=Priority.URGENT
        )
    newest = page.candles[-1]
    assert newest.ts == align(FROZEN_MS, "1h")
    assert newest.final is False
    assert all(c.final for c in page.candles[:-1])


async def test_colon_pairs_and_unknown_symbols(frozen: Simulator) -> None:
    async with client(frozen) as rest:
        assert await rest.pair_for("DOGEUSD") == "DOGE:USD"
        assert await rest.pair_for("doge:usd") == "DOGE:USD"
        assert await rest.pair_for("tBTCUSD") == "BTCUSD"
        with pytest.raises(UnknownSymbol):
            await rest.pair_for("NOPEUSD")
        page = await rest.fetch_candles("DOGE:USD", "1h", FROZEN_MS - 5 * HOUR_MS, FROZEN_MS)
        unknown = await rest.fetch_candles("NOPEUSD", "1h", FROZEN_MS - 5 * HOUR_MS, FROZEN_MS)
        with pytest.raises(ExchangeRequestError):
            await rest.fetch_candles("BTCUSD", "4h", 0, FROZEN_MS)  # derived: never sent
    assert page.candles
    assert {c.symbol for c in page.candles} == {"DOGEUSD"}
    assert unknown.candles == []
    assert unknown.raw_count == 0
    # The pair list was loaded once, through the cache, despite the unknown symbol.
    assert frozen.stats.rest_requests("conf") == 1
    assert frozen.stats.rest_requests("candles_hist") == 2


async def test_429_puts_the_limiter_in_the_penalty_box(simulator: Simulator) -> None:
    limiter = fast_limiter(min_backoff=0.8, initial=0.1)
    async with client(simulator, limiter) as rest:
        simulator.start_rest_storm(duration=0.4, ban=0.3)
        began = time.monotonic()
        pairs = await rest.fetch_pairs()
        elapsed = time.monotonic() - began
    assert "DOGE:USD" in pairs
    assert elapsed >= 0.8  # waited out the penalty, not hammering the banned endpoint
    assert limiter.stats.rate_limited == 1
    assert limiter.stats.current_backoff == 0.0
    assert rest.stats.requests["rate_limited"] == 1
    assert rest.stats.requests["ok"] == 1
    assert simulator.stats.rest_requests(outcome="storm") == 1
    assert simulator.stats.rest_requests(outcome="ok") == 1


async def test_rate_limited_too_often_raises(simulator: Simulator) -> None:
    limiter = fast_limiter(max_retries=2, min_backoff=0.05, initial=0.05)
    async with client(simulator, limiter) as rest:
        simulator.start_rest_storm(duration=30.0, ban=30.0)
        with pytest.raises(RateLimited):
            await rest.fetch_candles("BTCUSD", "1m", 0, 10**12)
    assert limiter.stats.gave_up == 1
    assert simulator.stats.rest_requests(endpoint="candles_hist") == 3


async def test_server_errors_are_retried_then_raised(simulator: Simulator) -> None:
    simulator.set_faults(rest_error_rate=1.0)
    async with client(simulator, attempts=3) as rest:
        with pytest.raises(ExchangeUnavailable, match="HTTP 5"):
            await rest.fetch_candles("BTCUSD", "1m", 0, 10**12, limit=10)
    assert rest.stats.requests["server_error"] == 3
    assert rest.stats.retries == 2
    assert simulator.stats.rest_requests(outcome="server_error") == 3


async def test_a_server_error_then_recovery(simulator: Simulator) -> None:
    simulator.set_faults(rest_error_rate=1.0)
    waits: list[float] = []

    async def heal_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        simulator.set_faults(rest_error_rate=0.0)

    async with client(simulator, attempts=3, backoff=1.5, sleep=heal_while_waiting) as rest:
        now = simulator.market.now_ms()
        page = await rest.fetch_candles("BTCUSD", "1h", now - 10 * HOUR_MS, now)
    assert page.candles
    assert waits == [1.5]
    assert rest.stats.requests["server_error"] == 1
    assert rest.stats.requests["ok"] == 1


async def test_slow_answers_time_out_as_unavailable(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(faults=Faults(rest_slow_rate=1.0, rest_slow_seconds=1.0))
    began = time.monotonic()
    async with client(sim, timeout=0.2, attempts=2) as rest:
        with pytest.raises(ExchangeUnavailable, match=r"within 0\.2 s"):
            await rest.fetch_candles("BTCUSD", "1m", 0, 10**12)
    assert rest.stats.requests["timeout"] == 2
    assert time.monotonic() - began < 5.0


async def test_connection_refused_is_unavailable() -> None:
    rest = BitfinexRest("http://127.0.0.1:9", fast_limiter(), unavailable_attempts=1)
    async with rest:
        with pytest.raises(ExchangeUnavailable, match="cannot reach"):
            await rest.fetch_pairs()
    assert rest.stats.requests["connection_error"] == 1


def _max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


async def test_limiter_spacing_keeps_requests_under_the_exchange_limit(
    simulator_factory: SimulatorFactory,
) -> None:
    # The exchange allows 4 requests a second; the limiter spaces starts 0.35 s apart.
    sim = await simulator_factory(rest_rate_limit=4, rest_rate_window=1.0, rest_ban_seconds=1.0)
    limiter = fast_limiter(delay=0.35)
    async with client(sim, limiter) as rest:
        now = sim.market.now_ms()
        for i in range(6):
            await rest.fetch_candles("BTCUSD", "1h", now - (i + 2) * HOUR_MS, now, limit=1)
    records = [r for r in sim.stats.rest_log if r.endpoint == "candles_hist"]
    assert [r.outcome for r in records] == ["ok"] * 6
    times = [r.at for r in records]
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))
    assert _max_in_window(times, 1.0) <= 4
    assert limiter.stats.requests == 6
    assert limiter.stats.rate_limited == 0


async def test_without_spacing_the_same_burst_is_rate_limited(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(rest_rate_limit=4, rest_rate_window=1.0, rest_ban_seconds=1.0)
    limiter = fast_limiter(delay=0.0, max_retries=0)
    async with client(sim, limiter) as rest:
        now = sim.market.now_ms()
        for _ in range(4):  # the exchange's allowance
            await rest.fetch_candles("BTCUSD", "1h", now - 2 * HOUR_MS, now, limit=1)
        with pytest.raises(RateLimited):
            await rest.fetch_candles("BTCUSD", "1h", now - 2 * HOUR_MS, now, limit=1)
    assert sim.stats.rest_requests(outcome="rate_limited") == 1
    assert limiter.stats.rate_limited == 1
