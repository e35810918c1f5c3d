"""Invalid candles from the exchange (high below low, negative volume, NaN, infinite, misaligned
or future times) are refused, kept in `rejected_candles`, and counted on /metrics; never stored,
never silently repaired, and never mistaken for "no trades here".

The simulator breaks rows on the wire (`rest_corrupt_rate`, `ws_corrupt_rate`). The daemon's parts
are built from settings (not run) and driven directly: backfill, gap detection and repair, the
WebSocket ingestion; /metrics is read through the app in-process.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.storage.tables import candles, data_gaps, rejected_candles
from market_data.timeframes import DAY_MS, align, next_open
from tests.plugins.sim import SimulatorFactory

SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD", "DOGEUSD", "ZRXUSD", "APTUSD")
TIMEFRAMES = ("1m", "5m", "15m", "1h")
DAYS = 0.06  # 86 one-minute rows: one page per series, under the 100 refused rows kept per page
REASONS = ("below low", "negative", "finite", "aligned", "future")


@pytest.fixture
async def sim(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory()


@pytest.fixture
async def daemon(database_url: str, sim: Simulator) -> AsyncIterator[Daemon]:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_symbols=",".join(SYMBOLS),
        bitfinex_timeframes=",".join(TIMEFRAMES),
        bitfinex_rest_url=sim.rest_url,
        bitfinex_ws_url=sim.ws_url,
        backfill_days=DAYS,
        rate_limit_delay=0,
        gap_repair_max_repairs_per_run=0,
        ws_save_flush_seconds=0.1,
        # The tests drive the parts by hand: no startup backfill stands in for the stream's
        # first catch-up.
        backfill_on_startup=False,
    )
    built = Daemon(settings)
    built.state.database_ready = True
    built.state.phase = "running"
    await built.store.upgrade()
    await built.cluster.member.heartbeat()  # as the start does: a member may claim work
    try:
        yield built
    finally:
        await built.rest.aclose()
        await built.store.close()


async def _metrics(daemon: Daemon) -> dict[str, float]:
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        text = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def _quarantine(daemon: Daemon) -> list[Any]:
    async with daemon.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(sa.select(rejected_candles))).all())


async def _all_candles(daemon: Daemon) -> list[Any]:
    async with daemon.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(sa.select(candles))).all())


async def _compare_with_truth(daemon: Daemon, sim: Simulator, start_ms: int) -> list[str]:
    problems: list[str] = []
    now = sim.market.now_ms()
    for symbol in SYMBOLS:
        for tf in TIMEFRAMES:
            first = align(start_ms, tf)
            first = first if first >= start_ms else next_open(first, tf)
            cutoff = align(now, tf)
            truth = sim.market.truth(symbol, tf, first, cutoff)
            stored = {
                c.ts: c
                for c in await daemon.store.candles_in_range(
                    SeriesKey(symbol, tf), first, cutoff, 10_000
                )
            }
            for c in truth:
                mine = stored.pop(c.ts, None)
                if mine is None:
                    problems.append(f"{symbol}/{tf} missing {c.ts}")
                elif not mine.same_values(c):
                    problems.append(f"{symbol}/{tf} different {c.ts}: {mine} != {c}")
            problems.extend(f"{symbol}/{tf} extra {ts}" for ts in stored)
    return problems


async def test_broken_rest_rows_are_quarantined_counted_and_never_stored(
    daemon: Daemon, sim: Simulator
) -> None:
    started = sim.market.now_ms()
    sim.set_faults(rest_corrupt_rate=1.0)  # every row broken: nothing may land
    report = await daemon.backfill.run()
    assert not report.failed, report
    broken = sim.stats.faults_fired["rest_corrupt_row"]
    assert broken > 300, sim.stats.faults_fired
    for kind in ("high_below_low", "negative_volume", "nan", "infinite", "misaligned", "future"):
        assert sim.stats.faults_fired[f"corrupt_{kind}"] > 0, kind

    assert await _all_candles(daemon) == []
    kept = await _quarantine(daemon)
    assert len(kept) == broken
    assert {row.source for row in kept} == {"backfill"}
    for reason in REASONS:
        assert any(reason in row.reason for row in kept), (reason, {r.reason for r in kept})
    metrics = await _metrics(daemon)
    assert metrics['market_data_candles_quarantined_total{source="backfill"}'] == broken
    assert metrics["market_data_rest_rows_rejected_total"] == broken
    assert daemon.sink.stats.rejected_by_source == {"backfill": broken}

    # Some rows broken: whatever lands is the exchange's candle exactly (nothing "fixed").
    sim.set_faults(rest_corrupt_rate=0.3)
    await daemon.backfill.run()
    stored = await _all_candles(daemon)
    assert stored
    for row in stored:
        assert math.isfinite(row.volume)
        assert row.volume >= 0
        assert row.high >= row.low
    assert not [
        p
        for p in await _compare_with_truth(daemon, sim, started - int(DAYS * DAY_MS))
        if "missing" not in p
    ]

    # Healed: a clean backfill plus gap repair fills every slot. No broken row was taken for
    # "no trades here" (an empty range is never fetched again).
    sim.set_faults(rest_corrupt_rate=0.0)
    await daemon.backfill.run()
    for _ in range(3):
        await daemon.gaps.detect()
        await daemon.gaps.repair()
    problems = await _compare_with_truth(daemon, sim, started - int(DAYS * DAY_MS))
    assert not problems, problems[:10]


async def test_broken_gap_repair_rows_are_quarantined_not_closed_as_empty(
    daemon: Daemon, sim: Simulator
) -> None:
    started = sim.market.now_ms()
    await daemon.backfill.run()
    series = SeriesKey("BTCUSD", "1m")
    stored = await daemon.store.candles_in_range(series, 0, started, 10_000)
    assert len(stored) > 40
    # Make holes the detector will find, then repair them while every row comes back broken.
    victims = [c.ts for c in stored[10:40]]
    async with daemon.store.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.delete(candles).where(
                candles.c.symbol == "BTCUSD", candles.c.timeframe == "1m", candles.c.ts.in_(victims)
            )
        )
    await daemon.gaps.detect()
    sim.set_faults(rest_corrupt_rate=1.0)
    await daemon.gaps.repair()
    kept = await _quarantine(daemon)
    assert any(row.source == "gap_repair" for row in kept), {row.source for row in kept}
    gaps = await daemon.store.list_gaps(symbol="BTCUSD", timeframe="1m", limit=1000)
    assert gaps
    assert not [g for g in gaps if g.status == "empty"], "broken rows taken for no trades"
    sim.set_faults(rest_corrupt_rate=0.0)
    for _ in range(3):
        await daemon.gaps.repair()
        if not await daemon.store.count_open_gaps():
            break
        await _retry_now(daemon)
    problems = await _compare_with_truth(daemon, sim, started - int(DAYS * DAY_MS))
    assert not problems, problems[:10]


async def _retry_now(daemon: Daemon) -> None:
    async with daemon.store.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(sa.update(data_gaps).values(next_attempt_at=None))


async def test_broken_websocket_rows_are_quarantined_and_counted(
    daemon: Daemon, sim: Simulator
) -> None:
    assert daemon.ws is not None
    sim.set_faults(ws_corrupt_rate=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.ws.run(stop))
    try:

        async def quarantined() -> bool:
            return any(row.source == "ws" for row in await _quarantine(daemon))

        deadline = asyncio.get_running_loop().time() + 20
        while not await quarantined():
            assert asyncio.get_running_loop().time() < deadline, "no WebSocket row quarantined"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert sim.stats.faults_fired["ws_corrupt_row"] > 0
    metrics = await _metrics(daemon)
    assert metrics.get('market_data_candles_quarantined_total{source="ws"}', 0) > 0, metrics
    # Every streamed row was broken on the wire; what landed came from the REST catch-up and
    # is the exchange's candle exactly.
    for symbol in SYMBOLS:
        for tf in TIMEFRAMES:
            for mine in await daemon.store.candles_in_range(SeriesKey(symbol, tf), 0, 2**42):
                truth = sim.market.candle_at(symbol, tf, mine.ts)
                assert truth is not None, mine
                assert not mine.final or mine.same_values(truth), (mine, truth)


async def test_broken_catch_up_rows_are_quarantined_through_the_sink_and_counted(
    daemon: Daemon, sim: Simulator
) -> None:
    # Regression: the REST catch-up behind the stream wrote its refused rows straight to the
    # store, so market_data_candles_quarantined_total{source="ws_catchup"} never counted them.
    assert daemon.ws is not None
    sim.set_faults(rest_corrupt_rate=1.0)  # the catch-up's REST answers are all broken
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.ws.run(stop))

    async def kept() -> int:
        return sum(1 for row in await _quarantine(daemon) if row.source == "ws_catchup")

    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not await kept():
            assert asyncio.get_running_loop().time() < deadline, "no catch-up row quarantined"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    metrics = await _metrics(daemon)
    counted = metrics.get('market_data_candles_quarantined_total{source="ws_catchup"}', 0)
    assert counted >= await kept() > 0, metrics
    assert daemon.sink.stats.rejected_by_source["ws_catchup"] == counted
