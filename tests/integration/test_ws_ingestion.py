"""WebSocket ingestion end to end: simulator -> sockets -> queue -> writer -> SQLite/PostgreSQL.

The simulator's market runs 6x faster than real time (a minute every 10 s), so a short run sees
many candles close. Every fault the simulator has is switched on in the chaos test, together
with a real database outage, and every candle that closed must then equal the market's truth.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from market_data.config import Settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle, SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.services.live.ingestion import WsIngestion
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import SqlStore
from market_data.storage.tables import candles
from market_data.timeframes import MINUTE_MS, align
from tests.integration.test_ws_shards import wait_until
from tests.plugins.db import ADMIN_URL
from tests.plugins.sim import SimulatorFactory

SPEED = 6.0


def ws_settings(sim: Simulator, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "bitfinex_symbols": ["BTCUSD"],
        "bitfinex_timeframes": ["1m"],
        "bitfinex_ws_url": sim.ws_url,
        "bitfinex_rest_url": sim.rest_url,
        "ws_heartbeat_timeout_seconds": 2,
        "ws_save_flush_seconds": 0.2,
        "ws_reconnect_initial_backoff": 0.1,
        "ws_reconnect_max_backoff": 1,
        "ws_catchup_lookback_minutes": 5,
        "rate_limit_delay": 0,
        "rate_limit_min_backoff_seconds": 1,
        "rate_limit_initial_backoff": 0.5,
        "rate_limit_max_backoff": 2,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def ingesting(
    sim: Simulator, store: SqlStore, settings: Settings, **options: Any
) -> AsyncIterator[WsIngestion]:
    options.setdefault("grace_seconds", 0.5 * sim.config.speed)
    options.setdefault("reconcile_seconds", 2.0)
    limiter = RateLimiter.from_settings(settings)
    async with BitfinexRest(sim.rest_url, limiter, clock_ms=sim.market.now_ms) as rest:
        exchange = BitfinexExchange(rest, sim.ws_url)
        ingestion = WsIngestion(
            settings,
            store,
            exchange,
            CandleSink(store, settings),
            clock_ms=sim.market.now_ms,
            **options,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(ingestion.run(stop), name="ws-ingestion")
        try:
            yield ingestion
            assert not task.done(), "ingestion ended before it was stopped"
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


async def duplicate_keys(store: SqlStore) -> int:
    c = candles.c
    stmt = sa.select(sa.func.count()).select_from(
        sa.select(c.symbol, c.timeframe, c.ts)
        .group_by(c.symbol, c.timeframe, c.ts)
        .having(sa.func.count() > 1)
        .subquery()
    )
    async with store.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def mismatches(
    sim: Simulator, store: SqlStore, series: list[SeriesKey], start_ms: int, end_ms: int
) -> list[tuple[SeriesKey, Candle, Candle | None]]:
    """Closed candles in [start, end) that are missing, different or not final in the store."""
    wrong = []
    for key in series:
        got = {c.ts: c for c in await store.candles_in_range(key, start_ms, end_ms)}
        for truth in sim.market.truth(key.symbol, key.timeframe, start_ms, end_ms):
            row = got.get(truth.ts)
            if row is None or not row.final or not row.same_values(truth):
                wrong.append((key, truth, row))
    return wrong


async def test_ten_series_on_shards_of_three(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory()
    symbols = ["BTCUSD", "ETHUSD", "SOLUSD", "DOGE:USD", "ZRXUSD"]
    settings = ws_settings(
        sim,
        database_url,
        bitfinex_symbols=symbols,
        bitfinex_timeframes=["1m", "5m"],
        ws_max_subscriptions_per_connection=3,
    )
    series = settings.native_series()
    assert len(series) == 10
    async with ingesting(sim, store, settings) as ingestion:

        async def all_stored() -> bool:
            return all([await store.last_candle(key) is not None for key in series])

        await wait_until(all_stored, "candles of all 10 series", 20)
        conns = ingestion.state.connections
        await wait_until(lambda: all(c.state == "subscribed" for c in conns), "subscriptions")
        assert len(conns) == 4
        assert sorted(len(c.subscriptions) for c in conns) == [1, 3, 3, 3]
        assert sorted(s for c in conns for s in c.subscriptions) == sorted(map(str, series))
        assert sim.stats.ws_opened == 4
        # Start-up catch-up: a successful ws_catchup job for every series.
        wanted = {(k.symbol, k.timeframe) for k in series}

        async def caught_up() -> bool:
            jobs = await store.list_jobs(job_type="ws_catchup", status="success", limit=1000)
            return {(j.symbol, j.timeframe) for j in jobs} == wanted

        await wait_until(caught_up, "a successful catch-up job for every series")


async def test_derived_timeframes_come_from_their_subscribed_source(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    sim = await simulator_factory()
    settings = ws_settings(sim, database_url, bitfinex_timeframes=["4h"])
    async with ingesting(sim, store, settings) as ingestion:
        derived = SeriesKey("BTCUSD", "4h")

        async def derived_stored() -> bool:
            return await store.last_candle(derived) is not None

        await wait_until(derived_stored, "4h candles computed from the 1h stream", 20)
        (conn,) = ingestion.state.connections
        assert conn.subscriptions == ["BTCUSD/1h"]  # 4h is not a Bitfinex channel
        newest = await store.last_candle(SeriesKey("BTCUSD", "1h"))
        assert newest is not None


async def test_open_candle_is_stored_open_then_final_and_corrections_apply(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    busy = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=120.0)
    # Every rollover re-sends the previous candle, as Bitfinex sometimes does.
    sim = await simulator_factory(speed=SPEED, pairs=(busy,), ws_resend_probability=1.0)
    key = SeriesKey("BTCUSD", "1m")
    async with ingesting(sim, store, ws_settings(sim, database_url)) as ingestion:
        current = align(sim.market.now_ms(), "1m")
        if sim.market.now_ms() - current > 40_000:
            current += MINUTE_MS  # too close to the end of this minute: take the next one

        async def stored_open() -> bool:
            rows = await store.candles_in_range(key, current, current + 1)
            return bool(rows) and not rows[0].final

        await wait_until(stored_open, "the running candle stored with final=False", 20)

        async def closed_and_true() -> bool:
            if sim.market.now_ms() < current + MINUTE_MS:
                return False
            return not await mismatches(sim, store, [key], current, current + MINUTE_MS)

        await wait_until(closed_and_true, "the candle final and equal to the truth", 30)
        await wait_until(lambda: ingestion.state.writer.corrections > 0, "a re-sent candle", 20)
        start = current - 3 * MINUTE_MS
        end = align(sim.market.now_ms(), "1m")
        assert not await mismatches(sim, store, [key], start, end)


@asynccontextmanager
async def database_outage(database_url: str, ingestion: WsIngestion) -> AsyncIterator[None]:
    """A real outage: PostgreSQL refuses connections; SQLite is locked by another writer."""
    if database_url.startswith("sqlite"):
        lock = sqlite3.connect(
            database_url.removeprefix("sqlite:///"),
            isolation_level=None,
            timeout=10,
            check_same_thread=False,
        )
        await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
        try:
            await wait_until(lambda: ingestion.state.db_outage, "the writer to see the outage", 20)
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    name = database_url.rsplit("/", 1)[1]
    await admin(
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        await wait_until(lambda: ingestion.state.db_outage, "the writer to see the outage", 20)
        yield
    finally:
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def admin(*statements: str) -> None:
    """Run statements on a short-lived admin connection (a long-lived one could be cut by
    other tests sharing the server), retrying a connection lost on the way."""
    for attempt in range(3):
        try:
            conn = await asyncpg.connect(ADMIN_URL, timeout=5)
            try:
                for statement in statements:
                    await conn.execute(statement)
                return
            finally:
                await conn.close()
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.chaos
async def test_every_closed_candle_survives_every_fault(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    faults = Faults(
        ws_drop_after=60,
        ws_restart_every=13,
        ws_maintenance_every=19,
        ws_maintenance_duration=3,
        ws_stall_every=11,
        ws_stall_duration=4,
        ws_loss_rate=0.1,
    )
    pairs = (
        PairSpec("BTCUSD", 60_000.0, trade_probability=0.95, trades_per_minute=30.0),
        PairSpec("ETHUSD", 3_000.0, trade_probability=0.9, trades_per_minute=20.0),
        PairSpec("SOLUSD", 150.0, trade_probability=0.85, trades_per_minute=12.0),
        PairSpec("DOGE:USD", 0.15, trade_probability=0.7, trades_per_minute=8.0),  # some gaps
    )
    sim = await simulator_factory(speed=12.0, faults=faults, pairs=pairs)
    symbols = ["BTCUSD", "ETHUSD", "SOLUSD", "DOGE:USD"]
    settings = ws_settings(
        sim,
        database_url,
        bitfinex_symbols=symbols,
        ws_max_subscriptions_per_connection=2,
    )
    series = settings.native_series()
    start = sim.market.now_ms()
    async with ingesting(sim, store, settings, queue_size=64) as ingestion:
        await asyncio.sleep(10)  # faults are periodic; let them run (time is the input here)
        async with database_outage(database_url, ingestion):
            await asyncio.sleep(3)  # keep the database away while the stream goes on
        await asyncio.sleep(12)
        end = align(sim.market.now_ms(), "1m")
        state = ingestion.state

        async def converged() -> bool:
            return not await mismatches(sim, store, series, start, end)

        try:
            await wait_until(converged, "every closed candle to equal the truth", 40)
        except AssertionError:
            wrong = await mismatches(sim, store, series, start, end)
            raise AssertionError(f"{len(wrong)} candles wrong, e.g. {wrong[:3]}") from None
        assert state.writer.outages >= 1
        assert not state.db_outage
        assert state.writer.dropped_rows == 0
        assert 0 < state.queue_max_depth <= state.queue_bound == 64
        assert sum(c.reconnects for c in state.connections) >= 4
        fired = sim.stats.faults_fired
        for fault in ("ws_drop", "ws_restart", "ws_maintenance", "ws_stall", "ws_update_lost"):
            assert fired[fault] >= 1, fault
        checked = sum(len(sim.market.truth(k.symbol, "1m", start, end)) for k in series)
        assert checked >= 10  # enough candles closed during the run to mean something
    assert await duplicate_keys(store) == 0
    jobs = await store.list_jobs(job_type="ws_catchup", limit=1000)
    assert any(j.status == "success" and j.candles_fetched > 0 for j in jobs)
    assert not [j for j in jobs if j.status == "running"]


@pytest.mark.parametrize("backend", ["sqlite"])  # a logic check: one backend is enough
async def test_lost_last_updates_are_corrected_from_rest(
    simulator_factory: SimulatorFactory, store: SqlStore, database_url: str
) -> None:
    # No reconnects at all, half the updates lost and no re-sends: the stream alone would
    # finalize many candles with stale values. The reconcile pass must fix every one.
    busy = tuple(
        PairSpec(name, 100.0, trade_probability=1.0, trades_per_minute=40.0)
        for name in ("BTCUSD", "ETHUSD")
    )
    sim = await simulator_factory(
        speed=10.0, pairs=busy, ws_resend_probability=0.0, faults=Faults(ws_loss_rate=0.5)
    )
    settings = ws_settings(sim, database_url, bitfinex_symbols=["BTCUSD", "ETHUSD"])
    series = settings.native_series()
    start = sim.market.now_ms()
    async with ingesting(sim, store, settings) as ingestion:
        await wait_until(
            lambda: sim.market.now_ms() >= align(start, "1m") + 3 * MINUTE_MS,
            "three minutes of market time",
            40,
        )
        end = align(sim.market.now_ms(), "1m")

        async def converged() -> bool:
            return not await mismatches(sim, store, series, start, end)

        await wait_until(converged, "every closed candle to equal the truth", 20)
        assert sum(c.reconnects for c in ingestion.state.connections) == 0
        assert sim.stats.faults_fired["ws_update_lost"] > 10
        assert ingestion.state.final_check.checks > 0  # checked beyond the start-up catch-up
