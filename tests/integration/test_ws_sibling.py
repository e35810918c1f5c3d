"""A pair streamed on 1m and 1h: the 1h series is confirmed from the 1m checks, asking nothing.

The simulator's market runs 120x faster than real time from a chosen moment (ten minutes before
an hour closes), so three hours of market time pass in about a minute and a half; the pair is
thin and the hours are known from the market's truth: the one before the watch traded, the one
the watch starts in traded only after the watch began, the next one had no trade. The stream
delivers its snapshots and then loses every update, 1h ones included, so only the check can
bring the candles in: every closed 1m and 1h candle must end up equal to the truth, the quiet
hour recorded empty, and the simulator's request log must show no 1h candles request after the
start-up catch-up.
"""

from __future__ import annotations

import time

import pytest

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, MINUTE_MS
from tests.integration.test_ws_ingestion import ingesting, mismatches, ws_settings
from tests.integration.test_ws_shards import wait_until
from tests.plugins.sim import SimulatorFactory

SPEED = 120.0
CONFIRM_S = 600.0  # market seconds: a quiet 1m series is checked every ten minutes
H0 = 1_772_456_400_000  # 2026-03-02T13:00:00Z: traded at 13:55 only; 14:00 to 15:00 quiet
M = SeriesKey("ZRXUSD", "1m")
H = SeriesKey("ZRXUSD", "1h")
THIN = (PairSpec("ZRXUSD", 0.4, trade_probability=0.05, trades_per_minute=3.0),)


def hist_requests(sim: Simulator, tf: str) -> int:
    """Candles requests for the pair's `tf` series, as the simulator logged them."""
    marker = f"/candles/trade:{tf}:"
    return sum(1 for r in sim.stats.rest_log if r.endpoint == "candles_hist" and marker in r.target)


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_a_1h_series_is_confirmed_from_its_1m_checks_without_requests_of_its_own(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    start_s, origin = (H0 + 50 * MINUTE_MS) / 1000, time.time()
    sim = await simulator_factory(
        speed=SPEED,
        clock=lambda: start_s + (time.time() - origin) * SPEED,
        pairs=THIN,
        ws_resend_probability=0.0,
        faults=Faults(ws_loss_rate=1.0),
    )
    first, end = H0 - HOUR_MS, H0 + 2 * HOUR_MS
    settings = ws_settings(
        sim, database_url, bitfinex_symbols=["ZRXUSD"], bitfinex_timeframes=["1m", "1h"]
    )
    async with ingesting(sim, store, settings, confirm_seconds=CONFIRM_S) as ingestion:
        state = ingestion.state
        await wait_until(
            lambda: state.catchup.runs >= 2 and state.catchup.queued == 0,
            "the start-up catch-up",
            60,
        )
        hourly_before = hist_requests(sim, "1h")
        minutely_before = hist_requests(sim, "1m")
        await wait_until(
            lambda: ingestion.oldest_unconfirmed().get(H, 0) >= end,
            "three hours of 1h confirmed",
            240,
        )
        await wait_until(lambda: ingestion.oldest_unconfirmed().get(M, 0) >= end, "1m too", 60)
        assert sum(c.reconnects for c in ingestion.connections) == 0  # no catch-up since
        check = state.final_check
        assert check.sibling_periods >= 3
        assert check.corrections >= 1
    traded = {
        hour: [c.ts for c in sim.market.truth(M.symbol, "1m", hour, hour + HOUR_MS)]
        for hour in range(first, end, HOUR_MS)
    }
    # The market as chosen: a traded hour before the watch, one traded only after the watch
    # began (no snapshot holds it), a quiet one.
    assert traded[H0 - HOUR_MS]
    assert traded[H0]
    assert not traded[H0 + HOUR_MS]
    assert min(traded[H0]) > H0 + 50 * MINUTE_MS
    assert sim.stats.faults_fired["ws_update_lost"] > 0
    # The 1h series asked nothing after the start-up catch-up; the 1m checks did the asking.
    assert hist_requests(sim, "1h") == hourly_before
    assert hist_requests(sim, "1m") >= minutely_before + 3
    # Every closed candle of both series equals the market's, from before the watch on.
    assert not await mismatches(sim, store, [M, H], first, end)
    # Exactly the quiet hour is recorded empty.
    empty = {
        hour
        for start, stop in await store.empty_ranges(H, first, end)
        for hour in range(max(start, first), min(stop, end), HOUR_MS)
    }
    assert empty == {hour for hour, minutes in traded.items() if not minutes}
