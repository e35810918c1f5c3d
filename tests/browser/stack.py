"""The daemon on the simulator, as the dashboard tests and the screenshot script run it:
settings, waiting for the backfill, punching a hole into the database, a full gap detection."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.storage.sql import open_store
from market_data.storage.tables import candles, series_stats
from tests.e2e.daemon_process import DaemonProcess, clean_env, wait_for


def daemon_settings(
    sim: Simulator, database_url: str, symbols: tuple[str, ...], timeframes: str, **more: str
) -> dict[str, str]:
    """Everything fast except gap repair, which waits to be asked (over the API)."""
    settings = {
        "DATABASE_URL": database_url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": ",".join(symbols),
        "BITFINEX_TIMEFRAMES": timeframes,
        "BACKFILL_DAYS": "2",
        "RATE_LIMIT_DELAY": "0.01",
        "GAP_DETECTION_INTERVAL_MINUTES": "0.05",
        "GAP_REPAIR_INTERVAL_MINUTES": "600",
        "WS_SAVE_FLUSH_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    settings.update(more)
    return settings


async def backfilled(d: DaemonProcess, series: list[SeriesKey]) -> None:
    """Wait until every native series' backfill job succeeded and a gap detection ran after."""

    async def done() -> bool:
        jobs = (await d.json("/jobs", params={"job_type": "backfill", "limit": 200}))["jobs"]
        ok = {(j["symbol"], j["timeframe"]) for j in jobs if j["status"] == "success"}
        return all((k.symbol, k.timeframe) in ok for k in series)

    await wait_for(done, 120, "the backfill jobs to succeed")
    status = await d.json("/status")
    runs = next(loop["runs"] for loop in status["loops"] if loop["name"] == "gap_detection")

    async def detected() -> bool:
        status = await d.json("/status")
        loop = next(loop for loop in status["loops"] if loop["name"] == "gap_detection")
        return bool(loop["runs"] > runs and not loop["running"])

    await wait_for(detected, 60, "a gap detection after the backfill")


async def punch(database_url: str, series: SeriesKey, start: int, end: int) -> int:
    """Delete the stored candles in [start, end) behind the daemon's back (as an operator or a
    broken disk might), keeping the maintained count honest; the rows deleted."""
    store = open_store(database_url)
    try:
        async with store.engine.begin() as conn:
            c, s = candles.c, series_stats.c
            deleted = (
                await conn.execute(
                    candles.delete().where(
                        c.exchange == "bitfinex",
                        c.symbol == series.symbol,
                        c.timeframe == series.timeframe,
                        c.ts >= start,
                        c.ts < end,
                    )
                )
            ).rowcount
            await conn.execute(
                series_stats.update()
                .where(
                    s.exchange == "bitfinex",
                    s.symbol == series.symbol,
                    s.timeframe == series.timeframe,
                )
                .values(candle_count=s.candle_count - deleted)
            )
        return int(deleted)
    finally:
        await store.close()


async def detect_full(settings: dict[str, str], cwd: Path) -> str:
    """`market-data gaps detect --full` with the daemon's settings: rows deleted behind the
    detector's watermark are only seen by a full scan."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "market_data",
        "--env-file",
        "",
        "gaps",
        "detect",
        "--full",
        env=clean_env(**settings),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def sorted_keys(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{r['symbol']} {r['timeframe']}" for r in rows)


async def repair_now(d: DaemonProcess, token: str) -> None:
    """POST /gaps/repair and wait for that repair job to finish."""

    async def finished_repairs() -> int:
        jobs = (await d.json("/jobs", params={"job_type": "gap_repair", "limit": 100}))["jobs"]
        return sum(1 for j in jobs if j["status"] != "running") + 1  # truthy for wait_for

    before = await finished_repairs()

    async def accepted() -> bool:
        response = await d.client.post("/gaps/repair", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (202, 409), response.text
        return response.status_code == 202

    await wait_for(accepted, 30, "POST /gaps/repair accepted")

    async def done() -> bool:
        return await finished_repairs() > before

    await wait_for(done, 120, "the gap repair to finish")
