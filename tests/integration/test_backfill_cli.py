"""`market-data backfill` in a subprocess: exit codes, Ctrl-C, and a killed run that resumes."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from market_data.cli import app
from market_data.models import SeriesKey
from market_data.services.backfill_plan import stage_bounds
from market_data.simulator import Simulator
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, align
from tests.integration.test_backfill import (
    assert_matches_truth,
    backfill_service,
    hist_requests,
    make_settings,
)

CLI = [sys.executable, "-m", "market_data"]
BTC = SeriesKey("BTCUSD", "1m")


def cli_env(database_url: str, sim: Simulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "BITFINEX_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "BITFINEX_REST_URL": sim.rest_url,
            "BITFINEX_SYMBOLS": "BTCUSD",
            "BITFINEX_TIMEFRAMES": "1h",
            "RATE_LIMIT_DELAY": "0",
            "RETENTION_1M": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


async def start(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI,
        "backfill",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await start(env, cwd, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_for_candles(
    database_url: str, key: SeriesKey, proc: asyncio.subprocess.Process
) -> int:
    store = open_store(database_url)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                assert proc.stderr is not None
                err = (await proc.stderr.read()).decode()
                raise AssertionError(f"the backfill ended before it could be interrupted: {err}")
            stats = {(s.symbol, s.timeframe): s.candle_count for s in await store.series_stats()}
            if stats.get((key.symbol, key.timeframe), 0) > 0:
                return stats[(key.symbol, key.timeframe)]
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    raise AssertionError("no candles arrived")


@pytest.mark.parametrize(
    "args",
    [
        ["--timeframe", "7x"],
        ["--start", "yesterday"],
        ["--start", "2026-02-01", "--end", "2026-01-01"],
        ["--symbol", "B@D"],
        ["--days", "-1"],
    ],
)
def test_bad_usage_exits_2(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    result = CliRunner().invoke(app, ["backfill", *args])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_exit_codes(database_url: str, simulator: Simulator, tmp_path: Path) -> None:
    env = cli_env(database_url, simulator)
    code, _, err = await run(env, tmp_path, "--days", "3", "--start", "2026-01-01")
    assert code == 2
    assert err.startswith("error: use either --days or --start/--end")

    code, out, err = await run(env, tmp_path, "--days", "2")
    assert code == 0, err
    assert "BTCUSD/1h: success" in out
    code, out, err = await run(
        env,
        tmp_path,
        "--symbol",
        "NOPEUSD",
        "--symbol",
        "btcusd",
        "--timeframe",
        "1H",
        "--days",
        "2",
    )
    assert code == 1
    assert "NOPEUSD" in err
    assert re.search(r"BTCUSD/1h: success, [01] candles, 1 requests", out)  # resumed: the tail
    store = open_store(database_url)
    try:
        jobs = [(j.symbol, j.status) for j in await store.list_jobs(job_type="backfill")]
    finally:
        await store.close()
    # newest first: the rerun (the unknown symbol, BTCUSD's tail), then the first run (its two
    # days fit one page: one stage, one job)
    assert jobs == [("BTCUSD", "success"), ("NOPEUSD", "failed"), ("BTCUSD", "success")]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_ctrl_c_stops_cleanly(
    database_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    env = cli_env(database_url, simulator, RATE_LIMIT_DELAY="0.4")
    proc = await start(env, tmp_path, "--timeframe", "1m", "--days", "25")
    await wait_for_candles(database_url, BTC, proc)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err.decode()
    assert "cancelled" in out.decode()
    store = open_store(database_url)
    try:
        # One job per stage begun: the stopped one is the newest (none when the stop fell
        # between two stages), the ones before it finished.
        jobs = await store.list_jobs(job_type="backfill")
        assert jobs[0].status in ("cancelled", "success")
        assert [j.status for j in jobs[1:]] == ["success"] * (len(jobs) - 1)
        assert 0 < sum(j.candles_fetched for j in jobs) < 36_000
    finally:
        await store.close()


async def test_killed_backfill_resumes_with_only_the_missing_pages(
    database_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    env = cli_env(database_url, simulator, RATE_LIMIT_DELAY="0.4")
    proc = await start(env, tmp_path, "--timeframe", "1m", "--days", "25")
    await wait_for_candles(database_url, BTC, proc)
    proc.kill()
    await proc.wait()

    store = open_store(database_url)
    try:
        now = simulator.market.now_ms()
        # Walked newest first: what is missing lies below the first stored candle, plus the
        # open tail (one request).
        first = await store.first_candle(BTC)
        assert first is not None
        low = align(now - 25 * DAY_MS, "1m")
        # Per stage (the last day, the week, the deep rest): a page per 10,000 missing candles.
        below = [
            len(simulator.market.truth("BTCUSD", "1m", lo, min(hi, first.ts)))
            for _, lo, hi in stage_bounds(low, now, ["1m"])
            if lo < first.ts
        ]
        settings = make_settings(database_url, simulator, "BTCUSD", "1m", backfill_days=25)
        before = hist_requests(simulator)
        async with backfill_service(settings, store) as service:
            report = await service.run()
        assert report.ok
        used = hist_requests(simulator) - before
        pages = sum(math.ceil(n / 10_000) for n in below) + 1
        assert pages <= used <= pages + 1
        await assert_matches_truth(store, simulator, BTC, align(now - 25 * DAY_MS, "1m"), now)
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_plan_is_shown_before_the_start_and_progress_by_stage(
    database_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    # 10 days of 1m for two series: per series one request for the last day, one for the week
    # before it (8,640 candles) and one for the three days before that (4,320).
    env = cli_env(
        database_url,
        simulator,
        BITFINEX_SYMBOLS="BTCUSD,ETHUSD",
        RATE_LIMIT_DELAY="0.01",
        COLUMNS="200",  # not a terminal: wide enough for the progress rows' last column
    )
    code, out, err = await run(env, tmp_path, "--timeframe", "1m", "--days", "10")
    assert code == 0, err
    text = " ".join(err.split())  # the progress display may wrap lines
    assert (
        "plan (recent first): day: 2 series, 2 requests; week: 2 series, 2 requests; "
        "deep: 2 series, 2 requests; 6 requests, ETA 0m00s at 0.01 s per request"
    ) in text
    assert text.index("plan (recent first)") < text.index("BTCUSD/1m")
    assert re.search(r"plan\b.*\b6/6 requests .*stage done", text), text
    assert "BTCUSD/1m: success" in out

    # `market-data status` summarises what a backfill would fetch now: the open tails.
    same = {**env, "BITFINEX_TIMEFRAMES": "1m", "BACKFILL_DAYS": "10"}
    proc = await asyncio.create_subprocess_exec(
        *CLI, "status", env=same, cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    status_out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert (
        "backfill plan: stage day, 2 requests left, ETA 0m00s (day 0/2, week 0/0, deep 0/0)"
        in " ".join(status_out.decode().split())
    )
