"""Live minutes that closed without an update are no-trade periods to confirm, not gaps.

A thin pair on the simulator (a trade in few minutes) is streamed live on a fast market clock
(30x: a minute every 2 s), with a short confirmation cadence (10 minutes of market time). Gap
detection runs all along with the stream's "oldest unconfirmed period" wired in, as the daemon
does: it must open no gap for the quiet minutes, and the confirmation must record them empty.
With a stream that silently loses every update, the confirmation alone must bring each candle
the stream missed into the store within the cadence. The market's truth says which minutes
traded.
"""

from __future__ import annotations

import asyncio

import pytest

from market_data.models import Gap, SeriesKey
from market_data.ranges import Range
from market_data.services.gap_repair import GapService
from market_data.simulator import Simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.timeframes import MINUTE_MS
from tests.integration.gap_support import make_settings, rig
from tests.integration.test_ws_ingestion import ingesting, mismatches, ws_settings
from tests.integration.test_ws_shards import wait_until
from tests.plugins.sim import SimulatorFactory

SPEED = 30.0
CONFIRM_S = 600.0  # market seconds: a quiet series is confirmed every ten minutes
KEY = SeriesKey("ZRXUSD", "1m")


def thin(trade_probability: float) -> tuple[PairSpec, ...]:
    return (PairSpec("ZRXUSD", 0.4, trade_probability=trade_probability, trades_per_minute=3.0),)


def minutes(ranges: list[Range]) -> set[int]:
    return {ts for start, end in ranges for ts in range(start, end, MINUTE_MS)}


def traded_minutes(sim: Simulator, start: int, end: int) -> set[int]:
    return {c.ts for c in sim.market.truth(KEY.symbol, KEY.timeframe, start, end)}


async def test_quiet_live_minutes_open_no_gap_and_are_confirmed_empty(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(speed=SPEED, pairs=thin(0.1))
    settings = ws_settings(sim, database_url, bitfinex_symbols=["ZRXUSD"])
    gap_settings = make_settings(
        database_url, sim.rest_url, bitfinex_symbols="ZRXUSD", bitfinex_timeframes="1m"
    )
    r = rig(gap_settings, store, clock=sim.market.now_ms)
    opened: list[Gap] = []
    try:
        # Stream finals are checked late (five minutes of market time), so the quiet minutes
        # before a traded one stay unconfirmed while detection already sees the traded one.
        options = {"confirm_seconds": CONFIRM_S, "reconcile_seconds": 300.0}
        async with ingesting(sim, store, settings, **options) as ingestion:
            await wait_until(lambda: KEY in ingestion.oldest_unconfirmed(), "the series watched")
            watched_from = ingestion.oldest_unconfirmed()[KEY]
            gaps = GapService(
                gap_settings,
                store,
                r.exchange,
                r.sink,
                clock=sim.market.now_ms,
                unconfirmed=ingestion.oldest_unconfirmed,
            )
            check = ingestion.state.final_check

            async def checked_a_while() -> bool:
                # Detection all along: before, during and after the checks.
                opened.extend((await gaps.detect()).new_gaps)
                return (
                    check.checks >= 3
                    and check.empty_periods > 0
                    and sim.market.now_ms() >= watched_from + 25 * MINUTE_MS
                )

            await wait_until(checked_a_while, "three checks of the quiet minutes", 120)
            confirmed_to = ingestion.oldest_unconfirmed()[KEY]
            opened.extend((await gaps.detect()).new_gaps)
            assert sum(c.reconnects for c in ingestion.state.connections) == 0
        assert confirmed_to >= watched_from + 15 * MINUTE_MS
        # Not one gap among the watched minutes: they were pending, then proven. Before the
        # watch, the minutes between the snapshot's newest row and the start-up catch-up's
        # window were seen by nobody: a real gap (one at most), as before.
        assert [g for g in opened if g.gap_end > watched_from] == []
        assert len(opened) <= 1
        # Confirmed: exactly the watched minutes without a trade are recorded empty.
        window = set(range(watched_from, confirmed_to, MINUTE_MS))
        empty = minutes(await store.empty_ranges(KEY, watched_from, confirmed_to)) & window
        assert empty == window - traded_minutes(sim, watched_from, confirmed_to)
        assert len(empty) >= 5
        # And with nothing pending any more, a full scan agrees: no hole is a gap.
        full = (await r.gaps.detect(full=True)).new_gaps
        assert [g for g in full if g.gap_end > watched_from] == []
        assert not await mismatches(sim, store, [KEY], watched_from, confirmed_to)
    finally:
        await r.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_candles_a_lossy_stream_missed_are_stored_within_the_confirmation_cadence(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    # The stream delivers its snapshot and then loses every update: a healthy connection on
    # which every traded minute looks like a quiet one. Only the confirmation can find them.
    sim = await simulator_factory(
        speed=SPEED, pairs=thin(0.4), ws_resend_probability=0.0, faults=Faults(ws_loss_rate=1.0)
    )
    settings = ws_settings(sim, database_url, bitfinex_symbols=["ZRXUSD"])
    grace_ms = int(0.5 * SPEED * 1000)
    # The first check after a minute closed (plus the grace) covers it; the check loop and the
    # writer add a few seconds of real time (a minute of market time each) on a busy machine.
    bound_ms = int(CONFIRM_S * 1000) + grace_ms + 4 * MINUTE_MS
    late: dict[int, int] = {}  # open time -> how long it had been closed when seen wrong
    async with ingesting(sim, store, settings, confirm_seconds=CONFIRM_S) as ingestion:
        await wait_until(lambda: KEY in ingestion.oldest_unconfirmed(), "the series watched")
        watched_from = ingestion.oldest_unconfirmed()[KEY]
        check = ingestion.state.final_check
        while (now := sim.market.now_ms()) < watched_from + bound_ms + 15 * MINUTE_MS:
            for _, truth, _ in await mismatches(sim, store, [KEY], watched_from, now - bound_ms):
                late.setdefault(truth.ts, now - (truth.ts + MINUTE_MS))
            await asyncio.sleep(0.5)  # sampling: the run's length is market time, above
        assert sum(c.reconnects for c in ingestion.state.connections) == 0  # no catch-up
        assert check.confirmations >= 2
        corrections = check.corrections
    assert not late, f"{len(late)} candles missed past the bound, e.g. {list(late.items())[:3]}"
    assert sim.stats.faults_fired["ws_update_lost"] > 0
    # After the snapshot (its newest row is the ready minute, one after `watched_from`) and the
    # start-up catch-up, every candle could only come from the check, source ws_reconcile.
    truth = traded_minutes(sim, watched_from + 2 * MINUTE_MS, watched_from + 20 * MINUTE_MS)
    assert len(truth) >= 2  # there were candles to miss
    assert corrections >= len(truth)
