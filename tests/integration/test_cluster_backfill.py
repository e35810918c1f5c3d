"""The backfill among several members on one PostgreSQL database, against the simulator: an item
a member claimed and then left unfinished (it died) is walked by another once the claim expires,
so nothing is left undone; an item another member finished is not walked again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from market_data.models import SeriesKey
from market_data.services.backfill_claims import ItemClaim
from market_data.services.cluster import BACKFILL_WORK, ClusterMember, series_key
from market_data.storage.sql import open_store
from tests.integration.test_backfill import assert_matches_truth, backfill_service, make_settings
from tests.plugins.sim import SimulatorFactory

TTL = 2.0
POSTGRES = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def item_claim(member: ClusterMember) -> ItemClaim:
    """What the daemon passes (daemon_cluster.backfill_item): one claim per series and stage."""

    def claim(
        series: SeriesKey, stage: str, start: int, end: int
    ) -> AbstractAsyncContextManager[bool | None]:
        del start, end
        return member.claimed_or_busy(BACKFILL_WORK, f"{series_key(series)}/{stage}", 900)

    return claim


@contextlib.asynccontextmanager
async def heartbeating(member: ClusterMember) -> AsyncIterator[None]:
    """The member's `cluster_heartbeat` loop, every TTL/3."""

    async def beat() -> None:
        while True:
            await member.heartbeat()
            await asyncio.sleep(TTL / 3)

    task = asyncio.create_task(beat(), name="heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@POSTGRES
async def test_an_item_left_by_a_dead_member_is_walked_by_a_survivor(
    database_url: str, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory()
    settings = make_settings(database_url, sim, "BTCUSD,ETHUSD", "1m", backfill_days=1)
    store_a = open_store(database_url, owner="a")
    store_b = open_store(database_url, owner="b")
    try:
        a = ClusterMember(store_a, "a", TTL)
        b = ClusterMember(store_b, "b", TTL)
        await a.heartbeat()
        await b.heartbeat()
        # a claims BTCUSD's item, then stops heartbeating without finishing it (it died).
        btc, eth = SeriesKey("BTCUSD", "1m"), SeriesKey("ETHUSD", "1m")
        assert await a.claim(BACKFILL_WORK, [f"{series_key(btc)}/day"]) == ["BTCUSD/1m/day"]
        # ETHUSD's item is already done by another member: not walked again.
        assert await a.claim(BACKFILL_WORK, [f"{series_key(eth)}/day"]) == ["ETHUSD/1m/day"]
        await a.finish(BACKFILL_WORK, f"{series_key(eth)}/day", keep_s=900)
        before = sim.market.now_ms()
        began = time.monotonic()
        async with heartbeating(b), backfill_service(settings, store_b) as service:
            report = await asyncio.wait_for(service.run(claim=item_claim(b)), TTL + 60)
        took = time.monotonic() - began
        assert not report.cancelled, report
        assert took >= TTL * 0.5, took  # it waited for a's claim to expire
        start = before - 86_400_000 + 60_000  # the run's own "now" is a little later
        assert await assert_matches_truth(store_b, sim, btc, start, before) > 1000
        assert await store_b.candles_in_range(eth, 0, before + 86_400_000) == []
        jobs = await store_b.list_jobs(limit=50, job_type="backfill")
        assert [(j.symbol, j.owner, j.status) for j in jobs] == [("BTCUSD", "b", "success")]
    finally:
        await store_a.close()
        await store_b.close()


@POSTGRES
async def test_an_item_whose_walk_failed_is_given_back_not_marked_done(
    database_url: str, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory()
    settings = make_settings(database_url, sim, "BTCUSD", "1m", backfill_days=1)
    store = open_store(database_url, owner="a")
    try:
        a = ClusterMember(store, "a", TTL)
        await a.heartbeat()
        key = f"{series_key(SeriesKey('BTCUSD', '1m'))}/day"
        sim.set_faults(rest_error_rate=1.0)  # every page fails: the item's job fails
        async with heartbeating(a), backfill_service(settings, store) as service:
            failed = await asyncio.wait_for(service.run(claim=item_claim(a)), TTL + 60)
            assert [r.symbol for r in failed.failed] == ["BTCUSD"], failed
            # Given back: claimable at once (a retry here, or another member, walks it).
            assert await store.work_done(BACKFILL_WORK, [key]) == set()
            sim.set_faults(rest_error_rate=0.0)
            again = await asyncio.wait_for(service.run(claim=item_claim(a)), TTL + 60)
        assert again.ok, again
        assert again.requests >= 1
        assert await store.work_done(BACKFILL_WORK, [key]) == {key}
    finally:
        await store.close()
