"""Candles finalized from the stream with a lost last update are corrected within two minutes.

The simulator loses half the WebSocket updates and never re-sends a closed candle, so the stream
alone finalizes many candles with stale values. The check against REST must correct every one
within the bound, ask about one request per series per pass (not one per candle), and export
the age of the oldest unchecked final candle in /metrics. Market time runs faster than real
time; REST pacing (`rate_limit_delay`) is scaled by the same factor, so the check has the
budget it would have against Bitfinex (30 requests a minute).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import httpx
import pytest

from market_data.api.app import create_app
from market_data.config import Settings
from market_data.daemon import Daemon
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle, SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.services.live.final_check import FinalCheck, UncheckedFinals
from market_data.services.live.ingestion import (
    DEFAULT_RECONCILE_SECONDS,
    RECONCILE_BUDGET_SHARE,
    WsIngestion,
)
from market_data.services.range_check import RangeChecker
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, MINUTE_MS, align
from tests.integration.test_ws_ingestion import ingesting, mismatches, ws_settings
from tests.integration.test_ws_shards import wait_until
from tests.plugins.sim import SimulatorFactory

BOUND_MS = 2 * MINUTE_MS
BITFINEX_DELAY_S = 2.0  # 30 REST requests a minute
NAMES = (
    "BTCUSD", "ETHUSD", "SOLUSD", "LTCUSD", "XRPUSD",
    "ADAUSD", "DOTUSD", "ZRXUSD", "EOSUSD", "XLMUSD",
)  # fmt: skip
AGE_GAUGE = "market_data_ws_unchecked_final_oldest_age_seconds"
T = TypeVar("T")


def busy_pairs() -> tuple[PairSpec, ...]:
    return tuple(
        PairSpec(name, 10.0 * (i + 1), trade_probability=1.0, trades_per_minute=30.0)
        for i, name in enumerate(NAMES)
    )


async def lossy_simulator(factory: SimulatorFactory, speed: float) -> Simulator:
    return await factory(
        speed=speed, pairs=busy_pairs(), ws_resend_probability=0.0,
        faults=Faults(ws_loss_rate=0.5),
    )  # fmt: skip


def budget_settings(sim: Simulator, database_url: str, symbols: list[str]) -> Settings:
    return ws_settings(
        sim, database_url, bitfinex_symbols=symbols,
        rate_limit_delay=BITFINEX_DELAY_S / sim.config.speed,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_wrong_finals_of_ten_series_are_corrected_within_two_minutes(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await lossy_simulator(simulator_factory, speed=10.0)
    settings = budget_settings(sim, database_url, list(NAMES))
    series = settings.native_series()
    assert len(series) == 10
    start = align(sim.market.now_ms(), "1m")
    late: dict[tuple[SeriesKey, int], int] = {}  # -> how long it had been closed when seen
    ages: list[float] = []  # the exported age of the oldest unchecked final candle
    options = {"reconcile_seconds": DEFAULT_RECONCILE_SECONDS}
    async with ingesting(sim, store, settings, **options) as ingestion:
        while (now := sim.market.now_ms()) < start + 7 * MINUTE_MS:
            ages.append(ingestion.state.unchecked_final_oldest_age_seconds)
            # Every candle closed for longer than the bound must be final and true by now.
            closed_by = now - BOUND_MS
            for key, truth, _ in await mismatches(
                sim, store, series, start, closed_by - MINUTE_MS + 1
            ):
                late.setdefault((key, truth.ts), now - (truth.ts + MINUTE_MS))
            await asyncio.sleep(0.5)  # sampling: the run's length is market time, above
        assert not late, (
            f"{len(late)} wrong candles stayed past the bound, e.g. {list(late.items())[:3]}"
        )
        check = ingestion.state.final_check
        assert sim.stats.faults_fired["ws_update_lost"] > 100
        assert sum(c.reconnects for c in ingestion.state.connections) == 0  # not catch-up's doing
        assert check.corrections >= 10  # the stream did finalize wrong candles
        assert check.failures == 0
        assert max(ages) < BOUND_MS / 1000, max(ages)
        print(f"oldest unchecked final: at most {max(ages):.0f} s of market time")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_one_request_per_series_per_pass_not_one_per_candle(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await lossy_simulator(simulator_factory, speed=30.0)
    settings = budget_settings(sim, database_url, list(NAMES))
    series = settings.native_series()
    start = align(sim.market.now_ms(), "1m")
    # A pass every five minutes of market time: each request should cover about five candles.
    async with ingesting(sim, store, settings, reconcile_seconds=300.0) as ingestion:
        state = ingestion.state  # its stats objects are the running parts' once it started
        await wait_until(
            lambda: state.final_check.checks >= len(series)
            and sim.market.now_ms() >= start + 8 * MINUTE_MS,
            "a pass over every series", 60,
        )  # fmt: skip
        end = align(sim.market.now_ms(), "1m") - 6 * MINUTE_MS  # checked by now, at 300 s
        assert not await mismatches(sim, store, series, start, end)
        check = state.final_check
        assert sum(c.reconnects for c in state.connections) == 0
        requests = sim.stats.rest_requests("candles_hist")
        assert requests == state.catchup.runs + check.checks  # nobody else asked for candles
        assert check.checks <= 2 * len(series)
        assert check.candles_checked >= 3 * check.checks
        assert check.corrections > 0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_oldest_unchecked_age_is_in_metrics_and_moves(
    simulator_factory: SimulatorFactory, database_url: str
) -> None:
    sim = await lossy_simulator(simulator_factory, speed=10.0)
    settings = budget_settings(sim, database_url, ["BTCUSD", "ETHUSD"])
    daemon = Daemon(settings)
    daemon.state.database_ready = True
    ws = WsIngestion(
        settings, daemon.store, daemon.exchange, daemon.sink, clock_ms=sim.market.now_ms,
        grace_seconds=0.5 * sim.config.speed,
    )  # fmt: skip
    daemon.ws = ws
    stop = asyncio.Event()
    task = asyncio.create_task(ws.run(stop))
    ages: list[float] = []
    try:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def scrape() -> bool:
                text = (await client.get("/metrics")).text
                found = re.search(rf"^{AGE_GAUGE} (\S+)$", text, re.MULTILINE)
                assert found is not None, f"{AGE_GAUGE} missing from /metrics"
                ages.append(float(found.group(1)))
                fell = any(later < earlier - 30 for earlier, later in itertools.pairwise(ages))
                return fell and ws.state.final_check.checks >= 2

            await wait_until(scrape, "the age to rise and fall back after a check", 60)
            text = (await client.get("/metrics")).text
            assert "market_data_ws_final_checks_total" in text
            assert "market_data_ws_final_corrections_total" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await daemon.rest.aclose()
        await daemon.store.close()
    assert max(ages) >= 30  # it rose while candles waited for their batch
    assert max(ages) < BOUND_MS / 1000


class VirtualClock:
    """Seconds that pass only when the check or the limiter sleeps (a `lifecycle.Clock` for
    the check's spacing and retries; `now`/`sleep` for the limiter)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return round(self.t * 1000)

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        return await awaitable  # the check never waits with a timeout


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_most_overdue_first_and_no_more_than_its_share_of_the_budget(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(pairs=busy_pairs())
    settings = ws_settings(sim, database_url, bitfinex_symbols=list(NAMES[:5]))
    series = settings.native_series()
    clock = VirtualClock()  # the REST budget's time; candle ages are the market's
    delay = 3.0
    limiter = RateLimiter(delay, 0, 1.0, 1.0, 1.0, now=clock.now, sleep=clock.sleep)
    checked: list[tuple[float, SeriesKey, int]] = []

    async def write(candles: Sequence[Candle]) -> None:
        checked.append((clock.now(), candles[0].series, len(candles)))
        await sink.write(candles, "ws_reconcile")

    sink = CandleSink(store, settings)
    unchecked = UncheckedFinals()
    now = sim.market.now_ms()
    for hours_ago, key in zip((3, 5, 1, 4, 2), series, strict=True):
        oldest = align(now - hours_ago * HOUR_MS, "1m")
        unchecked.note(key, oldest)
        unchecked.note(key, oldest + 9 * MINUTE_MS)  # ten candles, none stored yet
    async with BitfinexRest(sim.rest_url, limiter) as rest:
        check = FinalCheck(
            RangeChecker(
                store, BitfinexExchange(rest, sim.ws_url), sink, source="ws_reconcile", write=write
            ),
            {key: key.symbol for key in series},
            unchecked,
            batch_age_ms=0,
            spacing_s=delay / RECONCILE_BUDGET_SHARE,
            grace_ms=0,
            clock_ms=sim.market.now_ms,
            clock=clock,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(check.run(stop))
        await wait_until(lambda: len(unchecked) == 0, "every span checked")
        stop.set()
        await task
    order = [key for _, key, _ in checked]
    assert order == [series[i] for i in (1, 3, 0, 4, 2)]  # oldest span first
    assert [n for _, _, n in checked] == [10] * 5  # one request, the whole span
    starts = [at for at, _, _ in checked]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= delay / RECONCILE_BUDGET_SHARE - 1e-9  # a share of the budget, no more
    assert check.stats.checks == 5
    assert check.stats.corrections == 50
