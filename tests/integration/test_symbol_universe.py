"""BITFINEX_SYMBOLS=all on an exchange-shaped simulated market, with the daemon running: every
listed pair but the test ones is streamed; a pair listed while running is picked up by the
`pair_refresh` loop (subscribed and backfilled), one delisted is unsubscribed and shows as
`delisted` in /status with its data kept, and still does after a restart and in
`market-data status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from market_data.api.app import create_app
from market_data.cli.status import _collect
from market_data.config import Settings, load_settings
from market_data.daemon import Daemon
from market_data.daemon_startup import prepare_database
from market_data.models import SeriesKey, canonical_symbol
from market_data.simulator import Simulator, exchange_pairs
from market_data.symbols import is_test_pair, pattern_matches
from tests.plugins.sim import SimulatorFactory

PAIR_COUNT = 20  # the smallest exchange-shaped list with a test pair in it
NEW_PAIR = "ZZNEW:USD"


class QuietApi:
    """The daemon's companion without an HTTP server: the test reads the API in-process."""

    address = "in-process"

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    async def serve(self) -> None:
        await self._stopped.wait()

    def stop(self, *, force: bool = False) -> None:
        self._stopped.set()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


def streamed(daemon: Daemon) -> set[str]:
    """Channels subscribed on connections that are up."""
    ws = daemon.ws_state
    assert ws is not None
    return {s for c in ws.connections if c.state == "subscribed" for s in c.subscriptions}


def settings_for(sim: Simulator, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "bitfinex_symbols": "all",
        "bitfinex_timeframes": "1m",
        "bitfinex_rest_url": sim.rest_url,
        "bitfinex_ws_url": sim.ws_url,
        "backfill_days": 0.05,
        "rate_limit_delay": 0,
        "ws_max_subscriptions_per_connection": 25,
    }
    return load_settings(env_file=None, **{**values, **overrides})


async def test_all_pairs_follow_the_exchange_list(
    simulator_factory: SimulatorFactory, database_url: str
) -> None:
    sim = await simulator_factory(pairs=exchange_pairs(21, PAIR_COUNT))
    listed = sim.market.exchange_pairs()
    tests = [p for p in listed if is_test_pair(p)]
    assert tests, "the market should list a test pair"
    expected = {f"{canonical_symbol(p)}/1m" for p in listed if not is_test_pair(p)}

    settings = settings_for(sim, database_url)
    daemon = Daemon(settings)
    assert "pair_refresh" in daemon.loops
    running = asyncio.create_task(daemon.run(QuietApi()))
    transport = httpx.ASGITransport(app=create_app(daemon))
    client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
    try:

        async def all_streamed() -> bool:
            return daemon.ws_state is not None and streamed(daemon) == expected

        await wait_until(all_streamed, f"the {len(expected)} non-test pairs to be streamed")
        assert not any(s.startswith("TEST") for s in streamed(daemon))

        # A pair listed while running: the loop (here triggered by hand; a reconnect does the
        # same) subscribes it and backfills it from its listing.
        sim.market.list_pair(NEW_PAIR)
        new = SeriesKey(canonical_symbol(NEW_PAIR), "1m")
        refresh = daemon.loops["pair_refresh"]
        refresh.trigger()

        async def new_streamed_and_backfilled() -> bool:
            progress = daemon.backfill_progress.get(new)
            return (
                str(new) in streamed(daemon)
                and progress is not None
                and progress.state == "success"
                and refresh.status.runs >= 1
                and not refresh.status.running
            )

        await wait_until(new_streamed_and_backfilled, "the new pair to be streamed and backfilled")
        assert daemon.universe.state_of(new.symbol) == "active"
        # The range before its listing is on record as empty: a rerun will not walk it again.
        # (On PostgreSQL the walk and the first catch-up may record it in adjacent pieces.)
        before = await daemon.store.empty_ranges(new, 0, sim.market.now_ms())
        assert sum(b - a for a, b in before) >= 60 * 60_000  # most of the 72 minutes walked

        # A pair with stored candles is delisted: unsubscribed, shown delisted, data kept.
        stats = {s.symbol: s for s in await daemon.store.series_stats() if s.candle_count > 0}
        gone = next(
            canonical_symbol(p)
            for p in listed
            if not is_test_pair(p) and canonical_symbol(p) in stats
        )
        gone_pair = next(p for p in listed if canonical_symbol(p) == gone)
        sim.market.delist_pair(gone_pair)
        runs = refresh.status.runs
        assert sim.stats.ws_unsubscriptions == 0
        refresh.trigger()

        async def unsubscribed() -> bool:
            return (
                refresh.status.runs > runs
                and not refresh.status.running
                and f"{gone}/1m" not in streamed(daemon)
                and str(new) in streamed(daemon)
                and sim.stats.ws_unsubscriptions >= 1  # the exchange was told, not just us
            )

        await wait_until(unsubscribed, f"{gone} to be unsubscribed")
        status = (await client.get("/status")).json()
        rows = {(r["symbol"], r["timeframe"]): r for r in status["series"]}
        row = rows[(gone, "1m")]
        assert row["state"] == "delisted"
        assert row["candle_count"] >= stats[gone].candle_count  # its data is kept
        assert rows[(new.symbol, "1m")]["state"] == "active"
        health = (await client.get("/health")).json()
        assert health["checks"]["symbols"]["status"] == "ok", health
        assert gone not in daemon.universe.symbols
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(running, 30) == 0
        await client.aclose()

    # After a restart the stored series of a pair no longer listed is delisted again.
    again = Daemon(settings)
    try:
        await prepare_database(again.store, again.state, again.cluster.member)
        await again.pairs.load()
        assert again.universe.state_of(gone) == "delisted"
        assert again.universe.is_active(new.symbol)
        assert SeriesKey(gone, "1m") not in again.universe.native_series()
    finally:
        await again.close()

    # `market-data status` reads the pair list once and says the same.
    rows, _, _plan, _members = await _collect(settings, sim.market.now_ms())
    states = {r.stats.symbol: r.state for r in rows}
    assert states[gone] == "delisted"
    assert states.get(new.symbol, "active") == "active"  # stored only once it traded
    assert set(states.values()) == {"active", "delisted"}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_reconnect_refreshes_the_pair_list(
    simulator_factory: SimulatorFactory, database_url: str
) -> None:
    sim = await simulator_factory(pairs=exchange_pairs(21, PAIR_COUNT))
    listed = sim.market.exchange_pairs()
    expected = {f"{canonical_symbol(p)}/1m" for p in listed if pattern_matches("*USD", p)}
    settings = settings_for(sim, database_url, bitfinex_symbols="*USD", backfill_on_startup=False)
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run(QuietApi()))
    try:

        async def all_streamed() -> bool:
            return daemon.ws_state is not None and streamed(daemon) == expected

        await wait_until(all_streamed, f"the {len(expected)} USD pairs to be streamed")
        sim.market.list_pair(NEW_PAIR)
        refresh = daemon.loops["pair_refresh"]
        assert refresh.status.runs == 0  # daily: not due before the test ends
        # The connection drops; when it is back, the daemon reads the pair list again.
        sim.faults.update(ws_drop_after=1)

        async def dropped() -> bool:
            ws = daemon.ws_state
            return ws is not None and any(c.reconnects >= 1 for c in ws.connections)

        await wait_until(dropped, "the connection to drop")
        sim.faults.update(ws_drop_after=0)
        new = f"{canonical_symbol(NEW_PAIR)}/1m"

        async def picked_up() -> bool:
            return refresh.status.runs >= 1 and new in streamed(daemon)

        await wait_until(picked_up, "the reconnect to pick up the new pair")
        assert streamed(daemon) == expected | {new}
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(running, 30) == 0
