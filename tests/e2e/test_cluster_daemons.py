"""Two daemon processes on one PostgreSQL database: they see each other, split the live
channels, and when one is SIGKILLed the other takes its channels and closes its jobs after
LEASE_TTL_SECONDS; the survivor, stopped cleanly, leaves the cluster."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from market_data.simulator import Faults
from market_data.storage.sql import open_store
from tests.e2e.daemon_process import DaemonProcess, start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory

TTL = 5


def _settings(sim: Any, url: str, daemon_id: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "DAEMON_ID": daemon_id,
        "LEASE_TTL_SECONDS": str(TTL),
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD,ETHUSD",
        "BITFINEX_TIMEFRAMES": "1h",
        "BACKFILL_DAYS": "2",
        "RATE_LIMIT_DELAY": "0.01",
    }


async def _cluster(d: DaemonProcess) -> dict[str, Any] | None:
    try:
        cluster: dict[str, Any] = (await d.json("/status"))["cluster"]
    except Exception:  # not up yet
        return None
    return cluster


@pytest.mark.postgres
async def test_two_daemons_split_the_channels_and_one_takes_over_from_a_killed_one(
    simulator_factory: SimulatorFactory, fresh_database_url: Any, tmp_path: Path
) -> None:
    # Every REST answer takes 120 s: each daemon's startup backfill job stays `running`.
    sim = await simulator_factory(faults=Faults(rest_slow_rate=1.0, rest_slow_seconds=120.0))
    url = fresh_database_url("postgres")
    a = await start_daemon(tmp_path, "a", **_settings(sim, url, "node-a"))
    b = await start_daemon(tmp_path, "b", **_settings(sim, url, "node-b"))
    try:
        seen: list[Any] = []

        async def split() -> dict[str, Any] | None:
            cluster = await _cluster(a)
            seen[:] = [cluster]
            if cluster is None:
                return None
            members = {m["id"]: m for m in cluster["members"]}
            ready = set(members) == {"node-a", "node-b"} and all(
                m["alive"] and m["channels"] == 1 for m in members.values()
            )
            return cluster if ready else None

        try:
            cluster = await wait_for(split, 60, "both daemons alive, one channel each")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen}") from None
        assert cluster["self"] == "node-a"

        async def b_running() -> bool:
            jobs = (await a.json("/jobs", params={"status": "running", "limit": 200}))["jobs"]
            return any(j["owner"] == "node-b" for j in jobs)

        await wait_for(b_running, 60, "a job running on node-b")
        code, _ = await b.stop(signal.SIGKILL)
        assert code < 0
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            cluster = await _cluster(a)
            if cluster is None:
                return False
            members = {m["id"]: m for m in cluster["members"]}
            return not members["node-b"]["alive"] and cluster["held_channels"] == 2

        await wait_for(taken_over, TTL + 30, "node-a holding both channels")
        took = time.monotonic() - killed_at
        print(f"\ntakeover after SIGKILL with LEASE_TTL_SECONDS={TTL}: {took:.1f} s")
        assert took >= TTL * 0.5, took

        async def b_jobs_closed() -> bool:
            jobs = (await a.json("/jobs", params={"limit": 200}))["jobs"]
            mine = [j for j in jobs if j["owner"] == "node-b"]
            return bool(mine) and all(j["status"] != "running" for j in mine)

        await wait_for(b_jobs_closed, TTL + 30, "node-b's jobs closed by node-a")
        code, _ = await a.stop()
        assert code == 0, a.log()[-2000:]
    finally:
        await a.kill()
        await b.kill()
    store = open_store(url)
    try:
        jobs = await store.list_jobs(limit=200)
        _, members = await store.list_members()
    finally:
        await store.close()
    assert not [j for j in jobs if j.status == "running"]
    reasons = {j.last_error for j in jobs if j.owner == "node-b"}
    assert "failed: member node-b stopped heartbeating" in reasons
    assert all(j.status == "cancelled" for j in jobs if j.owner == "node-a" and j.last_error)
    assert [m.id for m in members] == ["node-b"]  # node-a left cleanly; node-b's row is history
