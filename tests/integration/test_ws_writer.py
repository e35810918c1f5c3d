"""The WebSocket writer's finality and batching rules on a real database (SQLite and PostgreSQL).

Frames are fed straight into the writer's queue, with a virtual clock the test moves (no sleeps:
the writer's flush deadlines, ticks and finality all read that clock), so each rule is checked
on its own: open -> final=False; a newer open time finalizes; a re-sent older candle is
a correction written final; an ended period is finalized by the timer; updates collapse.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from market_data.config import Settings
from market_data.exchanges.bitfinex.ws import CandleFrame
from market_data.lifecycle import VirtualClock
from market_data.models import Candle, SeriesKey
from market_data.services.live.writer import CandleWriter, QueueItem
from market_data.services.sink import CandleSink
from market_data.storage.sql import SqlStore
from tests.integration.test_ws_shards import wait_until

SERIES = SeriesKey("BTCUSD", "1m")
T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # a minute boundary
GRACE_MS = 2_000
FLUSH_SECONDS = 0.05


def candle(ts: int, close: float, volume: float = 1.0) -> Candle:
    return Candle(
        "BTCUSD", "1m", ts, 100.0, max(100.0, close), min(100.0, close), close, volume, final=False
    )


def frame(clock: VirtualClock, *candles: Candle, snapshot: bool = False) -> CandleFrame:
    return CandleFrame(SERIES, tuple(candles), snapshot, clock.now_ms(), clock.monotonic(), 1)


async def put(
    queue: asyncio.Queue[QueueItem],
    clock: VirtualClock,
    item: CandleFrame,
    flush_seconds: float = FLUSH_SECONDS,
) -> None:
    """Queue a frame and let its flush deadline pass."""
    await queue.put(item)
    await clock.advance(flush_seconds)


async def advance_to(clock: VirtualClock, ms: int) -> None:
    await clock.advance((ms - clock.now_ms()) / 1000)


@asynccontextmanager
async def running_writer(
    store: SqlStore,
    clock: VirtualClock,
    batch_size: int = 200,
    flush_seconds: float = FLUSH_SECONDS,
) -> AsyncIterator[tuple[asyncio.Queue[QueueItem], CandleWriter]]:
    settings = Settings(database_url="sqlite:///unused.db", bitfinex_timeframes=["1m"])
    queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=100)
    writer = CandleWriter(
        CandleSink(store, settings),
        queue,
        batch_size=batch_size,
        flush_seconds=flush_seconds,
        grace_ms=GRACE_MS,
        clock=clock,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    task = asyncio.create_task(writer.run())
    try:
        yield queue, writer
    finally:
        await queue.put(None)
        await asyncio.wait_for(task, 10)


async def stored(store: SqlStore, ts: int) -> Candle | None:
    rows = await store.candles_in_range(SERIES, ts, ts + 1)
    return rows[0] if rows else None


async def test_open_candle_becomes_final_on_rollover_and_corrections_stay_final(
    store: SqlStore,
) -> None:
    clock = VirtualClock(T0 + 10_000)
    async with running_writer(store, clock) as (queue, writer):
        await put(queue, clock, frame(clock, candle(T0, 101.0)))

        async def open_stored() -> bool:
            row = await stored(store, T0)
            return row is not None and not row.final and row.close == 101.0

        await wait_until(open_stored, "the open candle stored final=False")

        # Later updates of the same period replace it, still open.
        await put(queue, clock, frame(clock, candle(T0, 102.0, 2.0)))

        async def updated() -> bool:
            row = await stored(store, T0)
            return row is not None and row.close == 102.0 and not row.final

        await wait_until(updated, "the newer state of the open candle")

        # A newer open time: the previous period is final with its last known values.
        await advance_to(clock, T0 + 61_000)
        await put(queue, clock, frame(clock, candle(T0 + 60_000, 103.0)))

        async def rolled() -> bool:
            old, new = await stored(store, T0), await stored(store, T0 + 60_000)
            return old is not None and old.final and new is not None and not new.final

        await wait_until(rolled, "the rollover")
        old = await stored(store, T0)
        assert old is not None
        assert old.close == 102.0
        assert old.volume == 2.0

        # The exchange re-sends the closed candle with its true values: a correction, final.
        await put(queue, clock, frame(clock, candle(T0, 99.5, 2.5)))

        async def corrected() -> bool:
            row = await stored(store, T0)
            return row is not None and row.final and row.close == 99.5 and row.volume == 2.5

        await wait_until(corrected, "the correction")
        assert writer.stats.corrections == 1

        # A snapshot after a reconnect carries the same history: nothing goes back to open.
        await put(
            queue,
            clock,
            frame(clock, candle(T0, 99.5, 2.5), candle(T0 + 60_000, 103.5), snapshot=True),
        )

        async def snapshot_applied() -> bool:
            row = await stored(store, T0 + 60_000)
            return row is not None and row.close == 103.5

        await wait_until(snapshot_applied, "the snapshot")
        old = await stored(store, T0)
        new = await stored(store, T0 + 60_000)
        assert old is not None
        assert old.final
        assert new is not None
        assert not new.final


async def test_timer_finalizes_an_ended_period_without_new_trades(store: SqlStore) -> None:
    clock = VirtualClock(T0 + 30_000)
    async with running_writer(store, clock) as (queue, writer):
        await put(queue, clock, frame(clock, candle(T0, 101.0)))

        async def open_stored() -> bool:
            row = await stored(store, T0)
            return row is not None and not row.final

        await wait_until(open_stored, "the open candle")
        # Period over, grace not yet: the writer ticks all the way there without finalizing.
        await advance_to(clock, T0 + 60_000 + GRACE_MS - 1)
        await wait_until(lambda: clock.sleepers > 0, "the writer to wait for its next tick")
        row = await stored(store, T0)
        assert row is not None
        assert not row.final
        assert writer.stats.finalized_by_timer == 0

        await clock.advance(FLUSH_SECONDS)  # the next tick is past the grace: final
        await clock.advance(FLUSH_SECONDS)  # and the final row's flush deadline

        async def finalized() -> bool:
            row = await stored(store, T0)
            return row is not None and row.final and row.close == 101.0

        await wait_until(finalized, "the timer to finalize the candle")
        assert writer.stats.finalized_by_timer == 1
        # An update for that period arriving after the timer is a correction, never open again.
        await put(queue, clock, frame(clock, candle(T0, 100.5)))

        async def corrected() -> bool:
            row = await stored(store, T0)
            return row is not None and row.close == 100.5

        await wait_until(corrected, "the late update")
        row = await stored(store, T0)
        assert row is not None
        assert row.final


async def test_updates_to_one_candle_collapse_into_one_row_per_batch(store: SqlStore) -> None:
    clock = VirtualClock(T0 + 5_000)
    async with running_writer(store, clock, batch_size=1000, flush_seconds=0.5) as (queue, w):
        for i in range(50):
            await queue.put(frame(clock, candle(T0, 100.0 + i, float(i + 1))))
        # All 50 are taken in while no time passes; then the batch's deadline passes once.
        await wait_until(queue.empty, "the writer to take every update")
        await clock.advance(0.5)
        await wait_until(lambda: w.stats.flushes >= 1, "the flush")
        assert w.stats.updates == 50
        assert w.stats.candles_written == 1
        row = await stored(store, T0)
        assert row is not None
        assert row.close == 149.0
        assert row.volume == 50.0
        assert not row.final
        assert w.stats.latency.total == 50
        assert w.stats.commit_seconds.total == 50
        assert w.stats.commit_seconds.cumulative()[-1] == ("+Inf", 50)
        p99 = w.stats.latency.quantile(0.99)
        assert p99 is not None
        assert p99 < 2_000
