"""Starting and stopping the daemon process in awkward conditions: a SIGKILLed predecessor, work
stuck at SIGTERM, an unreachable database or exchange, bad settings, a taken port; and the demo."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx

from market_data.simulator import Faults
from market_data.storage.sql import open_store
from tests.e2e.daemon_process import clean_env, free_port, start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory


def _base(sim: Any, url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD",
        "BITFINEX_TIMEFRAMES": "1h",
        "BACKFILL_DAYS": "2",
        "RATE_LIMIT_DELAY": "0.01",
        "WS_INGESTION_ENABLED": "false",
    }


async def _running_backfill(d: Any) -> int | None:
    jobs = (await d.json("/jobs", params={"job_type": "backfill", "status": "running"}))["jobs"]
    return int(jobs[0]["id"]) if jobs else None


async def test_killed_daemon_jobs_fail_at_restart_and_sigterm_cancels_stuck_work(
    simulator_factory: SimulatorFactory, fresh_database_url: Any, tmp_path: Path
) -> None:
    # Every REST answer takes 30 s: the backfill job stays `running`.
    sim = await simulator_factory(faults=Faults(rest_slow_rate=1.0, rest_slow_seconds=30.0))
    url = fresh_database_url("sqlite")
    first = await start_daemon(tmp_path, "first", **_base(sim, url))
    try:
        killed_job = await wait_for(lambda: _running_backfill(first), 30, "a running backfill")
        code, _ = await first.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL
    finally:
        await first.kill()

    second = await start_daemon(tmp_path, "second", **_base(sim, url))
    try:

        async def marked_failed() -> bool:
            jobs = (await second.json("/jobs", params={"job_type": "backfill"}))["jobs"]
            job = next(j for j in jobs if j["id"] == killed_job)
            return job["status"] == "failed" and "interrupted" in job["last_error"]

        await wait_for(marked_failed, 20, "the killed daemon's job marked failed")
        own_job = await wait_for(lambda: _running_backfill(second), 20, "the new backfill")
        assert own_job != killed_job
        # Its request is stuck for 30 s: SIGTERM must still end the process within 10 s.
        code, seconds = await second.stop()
        assert code == 0, second.log()[-2000:]
        assert seconds < 10, seconds
    finally:
        await second.kill()
    assert "left running by a previous process" in second.log()
    store = open_store(url)
    try:
        jobs = {j.id: j for j in await store.list_jobs(limit=100)}
    finally:
        await store.close()
    assert jobs[killed_job].status == "failed"
    assert jobs[own_job].status == "cancelled"
    assert not [j for j in jobs.values() if j.status == "running"]


async def test_unreachable_database_and_exchange_degrade_but_never_crash(
    fresh_database_url: Any, tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    common = {
        "BITFINEX_REST_URL": f"http://{dead}",
        "BITFINEX_WS_URL": f"ws://{dead}/ws/2",
        "BITFINEX_SYMBOLS": "BTCUSD",
        "BITFINEX_TIMEFRAMES": "1h",
        "RATE_LIMIT_DELAY": "0.01",
    }
    no_db = await start_daemon(
        tmp_path, "no-db", DATABASE_URL=f"postgresql://md:hunter2hunter2@{dead}/md", **common
    )
    no_exchange = await start_daemon(
        tmp_path, "no-exchange", DATABASE_URL=fresh_database_url("sqlite"), **common
    )
    try:

        async def db_down() -> bool:
            response = await no_db.get("/health")
            return response.status_code == 503 and (
                response.json()["checks"]["database"]["status"] == "down"
            )

        async def exchange_down() -> bool:
            response = await no_exchange.get("/health")
            body = response.json()
            return (
                response.status_code == 200
                and body["status"] == "degraded"
                and (body["checks"]["exchange"]["status"] == "degraded")
            )

        await wait_for(db_down, 20, "/health 503 without a database")
        await wait_for(exchange_down, 30, "/health degraded without the exchange")
        status = await no_db.get("/status")
        assert status.status_code == 200
        assert status.json()["database_reachable"] is False
        assert no_db.alive
        assert no_exchange.alive
        stops = await asyncio.gather(no_db.stop(), no_exchange.stop())
        for d, (code, seconds) in zip((no_db, no_exchange), stops, strict=True):
            assert code == 0, d.log()[-2000:]
            assert seconds < 10
    finally:
        await no_db.kill()
        await no_exchange.kill()
    assert "Database unavailable" in no_db.log()
    assert "hunter2hunter2" not in no_db.log()
    assert "retrying" in no_exchange.log()


async def _run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_bad_setting_exits_2_in_one_line_and_taken_port_exits_1(tmp_path: Path) -> None:
    code, out = await _run(
        "-m", "market_data.daemon", env=clean_env(GAP_REPAIR_INTERVAL_MINUTES="soon"), cwd=tmp_path
    )
    assert code == 2
    assert out.strip().count("\n") == 0, out
    assert "GAP_REPAIR_INTERVAL_MINUTES" in out
    assert "Traceback" not in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = await _run(
            "-m",
            "market_data",
            "run",
            env=clean_env(API_PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path}/x.db"),
            cwd=tmp_path,
        )
    assert code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in out
    assert "Traceback" not in out


async def test_demo_runs_simulator_daemon_and_api_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "market_data",
        "demo",
        "--port",
        str(port),
        "--database",
        str(tmp_path / "demo.db"),
        "--days",
        "0.1",
        env=clean_env(),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def backfilled() -> bool:
                jobs = (await client.get("/jobs", params={"job_type": "backfill"})).json()
                return sum(j["status"] == "success" for j in jobs["jobs"]) >= 6

            await wait_for(backfilled, 60, "the demo's backfill")
            candles = (
                await client.get("/candles", params={"symbol": "BTCUSD", "timeframe": "4h"})
            ).json()
            assert candles["count"] >= 1
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text[-2000:]
    assert f"http://127.0.0.1:{port}/status" in text
    assert f"http://127.0.0.1:{port}/docs" in text
    assert "Stopped in" in text


async def test_sigterm_while_the_database_is_being_prepared_exits_0(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # Another connection holds the new file locked: the daemon's first statements wait on it
    # (busy timeout), and SIGTERM comes meanwhile. Once the lock goes the preparation succeeds;
    # the startup must then see the stop instead of starting work (that was a CRITICAL "Task
    # startup died" and exit 1).
    sim = await simulator_factory()
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    daemon = await start_daemon(tmp_path, "stopped-early", **_base(sim, f"sqlite:///{path}"))
    try:
        await wait_for(lambda: _logged(daemon, "Starting market-data"), 20, "the daemon's start")
        daemon.proc.send_signal(signal.SIGTERM)
        holder.execute("COMMIT")
        code = await asyncio.wait_for(daemon.proc.wait(), 20)
    finally:
        holder.close()
        await daemon.kill()
        await daemon.client.aclose()
    assert code == 0, daemon.log()[-3000:]
    assert "CRITICAL" not in daemon.log()


async def _logged(daemon: Any, text: str) -> bool:
    return text in daemon.log()
