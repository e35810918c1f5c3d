"""Periods the exchange proved had no trades are recorded empty from every answer: the WebSocket
snapshot, the catch-up's pages and the update loop's pages, so gap detection never takes them
for lost data. An answer with a refused row proves nothing.

Thin pairs on the simulator (a trade in one minute out of ten) make most minutes empty; the
market's truth says which ones are.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from market_data.models import SeriesKey
from market_data.ranges import Range
from market_data.services.live.catchup import CatchUp
from market_data.services.live.writer import CandleWriter, CatchupBatch, QueueItem
from market_data.services.update import UpdateService
from market_data.simulator import Simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.storage.tables import rejected_candles
from market_data.timeframes import DAY_MS, MINUTE_MS, align, ceil_open, previous_open
from tests.integration.gap_support import Rig, make_settings, punch, rig
from tests.integration.test_ws_ingestion import ingesting, ws_settings
from tests.integration.test_ws_shards import wait_until
from tests.plugins.sim import SimulatorFactory

THIN = (PairSpec("BTCUSD", 100.0, trade_probability=0.1),)
KEY = SeriesKey("BTCUSD", "1m")


def minutes(ranges: list[Range]) -> set[int]:
    return {ts for start, end in ranges for ts in range(start, end, MINUTE_MS)}


def no_trade_minutes(sim: Simulator, start: int, end: int) -> set[int]:
    """The minutes in [start, end) the market had no trade in (no candle)."""
    traded = {c.ts for c in sim.market.truth(KEY.symbol, KEY.timeframe, start, end)}
    return set(range(start, end, MINUTE_MS)) - traded


async def refused_rows(store: SqlStore, source: str) -> int:
    t = rejected_candles
    stmt = sa.select(sa.func.count()).select_from(t).where(t.c.source == source)
    async with store.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def test_the_snapshot_proves_its_no_trade_minutes_and_gaps_stay_real(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(speed=6.0, pairs=THIN)
    settings = ws_settings(sim, database_url)
    started = sim.market.now_ms()
    # Older than anything the start-up catch-up (the last 5 minutes) or the live stream sees:
    # only the snapshot (240 traded minutes, about 40 hours on this pair) answers for it. The
    # snapshot proves the minutes before its newest candle only (the newest ended period is
    # left out), so the cut is never later than the last trade before the start.
    traded = sim.market.truth(KEY.symbol, KEY.timeframe, started - 2 * DAY_MS, started)
    snapshot_only = min(align(started, "1m") - 10 * MINUTE_MS, traded[-1].ts)
    async with ingesting(sim, store, settings):

        async def snapshot_stored() -> bool:
            # Until the snapshot's empty minutes are all written (its flushes may take a while
            # on a busy machine); the assertions below say what is wrong if they never are.
            first = await store.first_candle(KEY)
            if first is None or first.ts >= snapshot_only - 60 * MINUTE_MS:
                return False
            recorded = minutes(await store.empty_ranges(KEY, first.ts, snapshot_only))
            return recorded >= no_trade_minutes(sim, first.ts, snapshot_only)

        with contextlib.suppress(AssertionError):
            await wait_until(snapshot_stored, "the snapshot's candles and empty minutes", 30)
    first = await store.first_candle(KEY)
    assert first is not None
    empty = minutes(await store.empty_ranges(KEY, first.ts, snapshot_only)) & set(
        range(first.ts, snapshot_only, MINUTE_MS)
    )
    # Exactly the minutes without a trade: none forgotten, no traded minute taken for empty.
    assert empty == no_trade_minutes(sim, first.ts, snapshot_only)
    assert len(empty) > 100

    gaps = rig(make_settings(database_url, sim.rest_url, bitfinex_timeframes="1m"), store)
    found = (await gaps.gaps.detect(full=True)).new_gaps
    assert [g for g in found if g.gap_start < snapshot_only] == []

    # A candle lost from the store is still a gap: the empty ranges hold only no-trade minutes.
    stored = await store.candles_in_range(KEY, first.ts, snapshot_only)
    lost = stored[len(stored) // 2].ts
    assert await punch(store, KEY, lost, lost + MINUTE_MS) == 1
    found = (await gaps.gaps.detect(full=True)).new_gaps
    assert [(g.gap_start, g.gap_end) for g in found if g.gap_start < snapshot_only] == [
        (lost, lost + MINUTE_MS)
    ]
    await gaps.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_a_snapshot_with_a_refused_row_proves_nothing(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    # REST answers stay clean, so the catch-up records its own window (the last 5 minutes);
    # everything older is the broken snapshot's alone.
    sim = await simulator_factory(speed=6.0, pairs=THIN, faults=Faults(ws_corrupt_rate=0.3))
    settings = ws_settings(sim, database_url)
    snapshot_only = align(sim.market.now_ms(), "1m") - 10 * MINUTE_MS
    async with ingesting(sim, store, settings):

        async def snapshot_stored() -> bool:
            # Refused rows are quarantined in the flush that writes the snapshot's candles.
            return await refused_rows(store, "ws") > 0 and bool(
                await store.candles_in_range(KEY, 0, snapshot_only)
            )

        await wait_until(snapshot_stored, "the snapshot's candles and refused rows", 20)
    assert await store.empty_ranges(KEY, 0, snapshot_only) == []


async def test_the_update_loop_records_the_empty_minutes_of_its_page(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(pairs=THIN)
    settings = make_settings(database_url, sim.rest_url, bitfinex_timeframes="1m")
    r = rig(settings, store)
    # A moment whose update window (the last 10 minutes) holds a trade, so the page has rows
    # to refuse: a thin pair has none in about a third of such windows.
    now = align(sim.market.now_ms(), "1m") - MINUTE_MS
    while not sim.market.truth(KEY.symbol, KEY.timeframe, now - 10 * MINUTE_MS, now):
        now -= MINUTE_MS
    update = UpdateService(settings, store, r.exchange, r.sink, clock=lambda: now)
    await update.run_once()
    # Ten minutes asked for; a thin pair rarely fills them, so the whole window is answered.
    # The newest ended minute is left out: the exchange may publish it a moment late.
    asked_from = ceil_open(now - 10 * MINUTE_MS, "1m")
    proven_to = previous_open(align(now, "1m"), "1m")
    recorded = minutes(await store.empty_ranges(KEY, 0, now + MINUTE_MS))
    assert recorded == no_trade_minutes(sim, asked_from, proven_to)
    assert recorded
    await r.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_an_update_page_with_refused_rows_proves_nothing(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(pairs=THIN, faults=Faults(rest_corrupt_rate=1.0))
    settings = make_settings(database_url, sim.rest_url, bitfinex_timeframes="1m")
    r = rig(settings, store)
    # A moment whose update window (the last 10 minutes) holds a trade, so the page has rows
    # to refuse: a thin pair has none in about a third of such windows.
    now = align(sim.market.now_ms(), "1m") - MINUTE_MS
    while not sim.market.truth(KEY.symbol, KEY.timeframe, now - 10 * MINUTE_MS, now):
        now -= MINUTE_MS
    update = UpdateService(settings, store, r.exchange, r.sink, clock=lambda: now)
    await update.run_once()
    assert await refused_rows(store, "update") > 0
    assert await store.empty_ranges(KEY, 0, now + MINUTE_MS) == []
    await r.close()


async def catch_up_once(r: Rig, now: int) -> CatchUp:
    """One first-subscription catch-up of the last hour, committed by the real writer."""
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    writer = CandleWriter(
        r.sink,
        queue,
        batch_size=1000,
        flush_seconds=0.1,
        grace_ms=0,
        backoff_initial=0.1,
        backoff_max=1.0,
    )

    async def enqueue(batch: CatchupBatch) -> None:
        await queue.put(batch)

    catchup = CatchUp(
        r.store,
        r.exchange,
        {KEY: await r.exchange.pair_for(KEY.symbol)},
        enqueue,
        sink=r.sink,
        lookback_minutes=60,
        grace_ms=0,
        clock_ms=lambda: now,
        retry_initial=60.0,  # a failed window is not retried within the test
    )
    stop = asyncio.Event()
    writing = asyncio.create_task(writer.run())
    catching_up = asyncio.create_task(catchup.run(stop))
    catchup.request(0, [KEY])
    try:
        await wait_until(lambda: catchup.stats.runs + catchup.stats.failures > 0, "a catch-up")
    finally:
        stop.set()
        await asyncio.wait_for(catching_up, 10)
        await queue.put(None)
        await asyncio.wait_for(writing, 10)
    return catchup


async def test_the_catch_up_records_the_empty_minutes_of_its_pages(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(pairs=THIN)
    r = rig(make_settings(database_url, sim.rest_url, bitfinex_timeframes="1m"), store)
    now = sim.market.now_ms()
    catchup = await catch_up_once(r, now)
    assert catchup.stats.runs == 1
    asked_from = ceil_open(now - 60 * MINUTE_MS, "1m")
    proven_to = previous_open(align(now, "1m"), "1m")
    recorded = minutes(await store.empty_ranges(KEY, 0, now + MINUTE_MS))
    assert recorded == no_trade_minutes(sim, asked_from, proven_to)
    assert len(recorded) > 30
    # The candles are there too, and between them and the empty minutes nothing is a gap.
    stored = {c.ts for c in await store.candles_in_range(KEY, asked_from, proven_to)}
    assert stored | recorded == set(range(asked_from, proven_to, MINUTE_MS))
    await r.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_a_catch_up_page_with_refused_rows_proves_nothing(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory(pairs=THIN, faults=Faults(rest_corrupt_rate=0.5))
    r = rig(make_settings(database_url, sim.rest_url, bitfinex_timeframes="1m"), store)
    now = sim.market.now_ms()
    catchup = await catch_up_once(r, now)
    assert catchup.stats.failures == 1  # the window is not verified: refused rows
    assert await refused_rows(store, "ws_catchup") > 0
    assert await store.empty_ranges(KEY, 0, now + MINUTE_MS) == []
    await r.close()
