"""Three daemons on one PostgreSQL database against the simulator, with faults: one SIGKILLed
in the middle of its backfill, another restarted (SIGTERM, then started again under the same
DAEMON_ID), PostgreSQL stopped for 20 s. Then proof that the cluster did the work once and lost
nothing:

- no live channel was streamed by two live daemons for longer than one LEASE_TTL_SECONDS
  (every daemon's /status sampled all along: the channels its WebSocket shards carry);
- every closed candle from the backfill's start to the end equals the simulator's truth, with
  no duplicate row;
- no job is left `running`; the killed daemon's running jobs were closed `failed` by a
  survivor, with a reason naming it.

Each daemon connects to the exchange from its own loopback address (BITFINEX_SOURCE_ADDRESS),
so the simulator counts its limits per daemon as for separate machines. The database outage is
made for this test's database alone (connections refused and the open ones terminated), so the
server keeps serving everything else; the run is marked `chaos` all the same: three daemons
with faults want the machine to themselves (`pytest -m chaos`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, MINUTE_MS, align
from tests.e2e.chaos_support import (
    SeriesFigures,
    compare_series,
    database_checks,
    statuses_of,
    stop_postgres_for,
)
from tests.e2e.cluster_support import ChannelWatch, longest_double_streaming
from tests.e2e.daemon_process import DaemonProcess, free_port, start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(420)]

TTL = 8
SYMBOLS = ("BTCUSD", "ETHUSD", "DOGEUSD", "ZRXUSD")
NATIVE = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")]
CHANNELS = {str(k) for k in NATIVE}
BACKFILL_DAYS = 10.0  # 1m in three stages (day, week, deep): 16 items for three daemons
OUTAGE_SECONDS = 20.0
SOURCES = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
TOKEN = "cluster-chaos-5c2e"


def _settings(sim: Simulator, url: str, name: str, port: int) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "DAEMON_ID": name,
        "LEASE_TTL_SECONDS": str(TTL),
        "BITFINEX_SOURCE_ADDRESS": SOURCES[name],
        "API_PORT": str(port),
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD,ETHUSD,DOGE:USD,ZRXUSD",
        "BITFINEX_TIMEFRAMES": "1m,1h",
        "BACKFILL_DAYS": str(BACKFILL_DAYS),
        "REST_UPDATE_ENABLED": "true",
        "UPDATE_INTERVAL_SECONDS": "5",
        "WS_SAVE_FLUSH_SECONDS": "0.2",
        "WS_HEARTBEAT_TIMEOUT_SECONDS": "2",
        "WS_RECONNECT_INITIAL_BACKOFF": "0.2",
        "WS_RECONNECT_MAX_BACKOFF": "1",
        "GAP_DETECTION_INTERVAL_MINUTES": "0.1",
        "GAP_REPAIR_INTERVAL_MINUTES": "0.1",
        "GAP_REPAIR_MAX_REPAIRS_PER_RUN": "0",
        "RATE_LIMIT_DELAY": "0.05",
        "RATE_LIMIT_MAX_RETRIES": "20",
        "RATE_LIMIT_INITIAL_BACKOFF": "0.2",
        "RATE_LIMIT_MAX_BACKOFF": "1",
        "API_TOKEN": TOKEN,
        "LOG_LEVEL": "INFO",
    }


async def _running_jobs_of(url: str, owner: str) -> list[int]:
    conn = await asyncpg.connect(url, timeout=3)
    try:
        rows = await conn.fetch(
            "SELECT id FROM ingestion_jobs WHERE status = 'running' AND owner = $1", owner
        )
    except asyncpg.UndefinedTableError:
        return []  # not migrated yet
    finally:
        await conn.close()
    return [int(r["id"]) for r in rows]


async def _cluster(d: DaemonProcess) -> dict[str, Any]:
    cluster: dict[str, Any] = (await d.json("/status"))["cluster"]
    return cluster


async def _backfills_done(daemons: list[DaemonProcess]) -> bool:
    for d in daemons:
        if (await d.json("/status"))["backfill"]["state"] != "done":
            return False
    return True


async def _backfilled_again(url: str, killed: list[int]) -> dict[str, bool]:
    """For each series whose backfill job c was killed in: whether a later backfill job of it
    by a or b succeeded."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT k.symbol || '/' || k.timeframe AS series, EXISTS ("
            " SELECT 1 FROM ingestion_jobs j WHERE j.job_type = 'backfill'"
            " AND j.symbol = k.symbol AND j.timeframe = k.timeframe AND j.id > k.id"
            " AND j.owner IN ('a', 'b') AND j.status = 'success') AS again "
            "FROM ingestion_jobs k WHERE k.id = ANY($1::bigint[]) AND k.job_type = 'backfill'",
            killed,
        )
    finally:
        await conn.close()
    return {str(r["series"]): bool(r["again"]) for r in rows}


def _alive(cluster: dict[str, Any]) -> set[str]:
    return {m["id"] for m in cluster["members"] if m["alive"]}


async def _settled(daemons: list[DaemonProcess], watch: ChannelWatch, names: set[str]) -> bool:
    """Exactly `names` alive as every one of them sees it, each holding its whole share, and
    every channel streamed."""
    for d in daemons:
        cluster = await _cluster(d)
        if _alive(cluster) != names or cluster["fenced"]:
            return False
        if cluster["held_channels"] != cluster["expected_channels"]:
            return False
    await watch.sample()
    return watch.covered(CHANNELS)


async def _converged(daemons: list[DaemonProcess], sim: Simulator, store: Any) -> int | None:
    """Every backfill done, no gap open, and the newest closed period of every series stored
    final with the exchange's values: the cut-off for the comparison, else None."""
    for d in daemons:
        if (await d.json("/status"))["backfill"]["state"] != "done":
            return None
    if await store.count_open_gaps():
        return None
    cutoff = align(int(time.time() * 1000) - 5_000, "1m")
    for key in NATIVE:
        closed_before = align(cutoff, key.timeframe)
        truth = sim.market.truth(
            key.symbol, key.timeframe, closed_before - 30 * MINUTE_MS, closed_before
        )
        if not truth:
            continue  # the thin pair may not have traded in the last half hour
        newest = truth[-1]
        stored = await store.candles_in_range(key, newest.ts, newest.ts + 1)
        if not stored or not stored[0].final or not stored[0].same_values(newest):
            return None
    return cutoff


async def test_three_daemons_under_faults_share_the_work_and_lose_nothing(
    simulator_factory: SimulatorFactory,
    fresh_database_url: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # Slow REST answers at first, so the startup backfills are still running at the SIGKILL.
    sim = await simulator_factory(seed=777)
    sim.set_faults(rest_slow_rate=1.0, rest_slow_seconds=2.0)
    url = fresh_database_url("postgres")
    ports = {name: free_port() for name in SOURCES}
    began = time.monotonic()
    daemons: dict[str, DaemonProcess] = {}
    for name in SOURCES:
        daemons[name] = await start_daemon(tmp_path, name, **_settings(sim, url, name, ports[name]))
    # The latest start: every daemon's backfill range covers this much.
    start_ms = int(time.time() * 1000) - int(BACKFILL_DAYS * DAY_MS)
    watch = ChannelWatch(dict(daemons))
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(watch.run(stop_watch), name="channel_watch")
    figures: dict[str, Any] = {}
    store = None
    try:
        a, b, c = daemons["a"], daemons["b"], daemons["c"]

        async def three_members() -> bool:
            return _alive(await _cluster(a)) == {"a", "b", "c"}

        await wait_for(three_members, 60, "a to see three live members")

        # 1. SIGKILL c while it walks a backfill item (and whatever else it has running).
        killed: list[int] = []

        async def c_backfilling() -> bool:
            killed[:] = await _running_jobs_of(url, "c")
            return bool(await _backfilled_again(url, killed))

        await wait_for(c_backfilling, 60, "a backfill job running on c", every=0.05)
        c.proc.send_signal(signal.SIGKILL)
        await c.proc.wait()
        killed_at = time.monotonic()
        sim.set_faults(rest_slow_rate=0.0)
        await wait_for(lambda: _settled([a, b], watch, {"a", "b"}), TTL + 60, "a and b take over")
        figures["takeover_seconds"] = round(time.monotonic() - killed_at, 1)
        # The backfill items c was walking are taken over by a or b (once c's claims expire):
        # their backfills are done only when the whole cluster's is.
        await wait_for(lambda: _backfills_done([a, b]), TTL + 90, "a's and b's backfills done")
        taken = await _backfilled_again(url, killed)
        assert taken, "c was killed in no backfill item"
        assert all(taken.values()), taken

        # 2. Restart b: a clean stop, then the same DAEMON_ID again.
        code, _ = await b.stop()
        assert code == 0, b.log()[-3000:]
        b = await start_daemon(tmp_path, "b2", **_settings(sim, url, "b", ports["b"]))
        daemons["b"] = b
        watch.replace("b", b)
        await wait_for(lambda: _settled([a, b], watch, {"a", "b"}), 90, "b back, shares held")

        # 3. PostgreSQL stopped for OUTAGE_SECONDS (the serial chaos phase: nothing else runs).
        def both_alive() -> None:
            assert a.alive, a.log()[-3000:]
            assert b.alive, b.log()[-3000:]

        await stop_postgres_for(OUTAGE_SECONDS, both_alive)
        await wait_for(lambda: _settled([a, b], watch, {"a", "b"}), 90, "the cluster after")

        # 4. Converge: backfills done, gaps repaired, the newest candles final.
        store = open_store(url)  # opened now: the outage would have broken its connections
        cutoff = await wait_for(
            lambda: _converged([a, b], sim, store), 150, "the cluster to converge", every=1.0
        )
        stop_watch.set()
        await watcher
        for d in (a, b):
            code, _ = await d.stop()
            assert code == 0, d.log()[-3000:]
        compared: list[SeriesFigures] = [
            await compare_series(store, sim, key, start_ms, cutoff, derived=False) for key in NATIVE
        ]
        db = await database_checks(store)
        killed_states = await statuses_of(store, killed)
    finally:
        stop_watch.set()
        if not watcher.done():
            watcher.cancel()
        for d in daemons.values():
            await d.kill()
        if store is not None:
            await store.close()

    doubled, channel = longest_double_streaming(watch.rounds)
    figures.update(
        wall_seconds=round(time.monotonic() - began, 1),
        status_rounds=len(watch.rounds),
        longest_double_streaming_seconds=round(doubled, 1),
        candles_compared=sum(f.compared for f in compared),
        killed_jobs=len(killed),
    )
    print(f"\ncluster chaos run: {figures}")
    print(f"database: {db}")
    assert len(watch.rounds) >= 40, figures  # the watch kept sampling through the run
    assert doubled <= TTL, f"{channel} streamed by two live daemons for {doubled:.1f} s"
    assert all(f.compared > 0 for f in compared), compared
    bad = [f for f in compared if f.bad]
    assert not bad, "\n".join(f"{f.series}: {f.examples}" for f in bad)
    assert db["duplicate_candles"] == 0
    assert db["jobs_running"] == 0, db["jobs_by_type_and_status"]
    assert killed
    assert set(killed_states) == set(killed), (killed, killed_states)
    for state, reason in killed_states.values():
        assert state == "failed", killed_states
        assert reason == "failed: member c stopped heartbeating", killed_states
    for name in ("a", "b"):
        assert "Traceback" not in daemons[name].log(), daemons[name].log()[-3000:]
