"""The daemon's start-up steps (daemon_startup.py) on real parts: the store on SQLite and
PostgreSQL, the simulator as the exchange, with its faults switched on and off."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest

from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.daemon_startup import backfill_until_done, prepare_database, retry_until_stopped
from market_data.simulator import Simulator
from tests.plugins.sim import SimulatorFactory


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def sim(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory()


@pytest.fixture
async def daemon(database_url: str, sim: Simulator) -> AsyncIterator[Daemon]:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_symbols="BTCUSD",
        bitfinex_timeframes="1h",
        bitfinex_rest_url=sim.rest_url,
        bitfinex_ws_url=sim.ws_url,
        backfill_days=2,
        rate_limit_delay=0,
    )
    built = Daemon(settings)
    try:
        yield built
    finally:
        await built.close()


async def test_the_startup_backfill_rides_out_an_exchange_outage(
    daemon: Daemon, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "market_data.daemon")
    await prepare_database(daemon.store, daemon.state, daemon.cluster.member)
    assert daemon.state.database_ready
    sim.faults.update(rest_error_rate=1.0)
    task = asyncio.create_task(
        backfill_until_done(daemon.backfill, daemon.state, daemon.stop, what="Startup backfill")
    )
    # Every answer a 5xx: the series fails as an outage, which /health will show; it is retried.
    await wait_until(lambda: daemon.state.exchange_error is not None, "the outage to show")
    assert daemon.state.backfill == "running"
    assert (daemon.state.backfill_error or "").startswith("retrying 1 series: ")
    assert "Startup backfill: 1 series failed" in caplog.text

    sim.faults.update(rest_error_rate=0.0)
    assert await asyncio.wait_for(task, 60) is True
    assert daemon.state.backfill == "done"
    assert (daemon.state.exchange_error, daemon.state.backfill_error) == (None, None)
    [stats] = await daemon.store.series_stats()
    assert stats.candle_count > 0


async def test_the_startup_backfill_stops_while_it_waits_to_retry(
    daemon: Daemon, sim: Simulator
) -> None:
    await prepare_database(daemon.store, daemon.state, daemon.cluster.member)
    sim.faults.update(rest_error_rate=1.0)
    task = asyncio.create_task(
        backfill_until_done(daemon.backfill, daemon.state, daemon.stop, what="Startup backfill")
    )
    await wait_until(lambda: daemon.state.backfill_error is not None, "a failed round")
    daemon.stop.set()
    assert await asyncio.wait_for(task, 10) is False
    assert daemon.state.backfill == "stopped"


async def test_an_unreachable_database_is_retried_until_the_daemon_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "market_data.daemon")
    settings = load_settings(
        env_file=None, database_url="postgresql://md:secret@127.0.0.1:1/nowhere"
    )
    daemon = Daemon(settings)
    try:
        task = asyncio.create_task(
            retry_until_stopped(
                "Database",
                lambda: prepare_database(daemon.store, daemon.state, daemon.cluster.member),
                daemon.stop,
            )
        )
        await wait_until(lambda: daemon.state.database_error is not None, "a failed attempt")
        assert not daemon.state.database_ready
        daemon.stop.set()
        assert await asyncio.wait_for(task, 10) is False
    finally:
        await daemon.close()
    assert "Database unavailable (StorageUnavailable" in caplog.text
    assert "retrying in 1 s" in caplog.text
    assert "secret" not in caplog.text
