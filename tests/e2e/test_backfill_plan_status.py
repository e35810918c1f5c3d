"""/status shows the startup backfill's plan while it runs: the stage, requests left going down,
and an ETA at the configured spacing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.daemon_process import start_daemon
from tests.plugins.sim import SimulatorFactory

SPACING = 0.3  # RATE_LIMIT_DELAY: slow enough for /status to see the plan move


async def test_status_shows_the_plan_going_down_stage_by_stage(
    simulator_factory: SimulatorFactory, fresh_database_url: Any, tmp_path: Path
) -> None:
    sim = await simulator_factory()
    d = await start_daemon(
        tmp_path,
        "daemon",
        DATABASE_URL=fresh_database_url("sqlite"),
        BITFINEX_REST_URL=sim.rest_url,
        BITFINEX_WS_URL=sim.ws_url,
        BITFINEX_SYMBOLS="BTCUSD,ETHUSD,DOGE:USD,ZRXUSD",
        BITFINEX_TIMEFRAMES="1m",
        BACKFILL_DAYS="10",
        RATE_LIMIT_DELAY=str(SPACING),
        WS_INGESTION_ENABLED="false",
    )
    seen: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert d.alive, d.log()
            assert time.monotonic() < deadline, f"the backfill did not finish: {seen[-1:]}"
            try:
                backfill = (await d.json("/status"))["backfill"]
            except httpx.HTTPError:  # not serving yet
                backfill = None
            # Before the backfill has planned, its plan is empty (and "done").
            if backfill is not None and backfill["plan"]["stages"]:
                seen.append(backfill["plan"])
                if backfill["state"] == "done":
                    break
            await asyncio.sleep(0.1)  # the polling cadence; the loop waits for "done"
    finally:
        await d.kill()

    running = [p for p in seen if p["stage"] != "done"]
    assert running, "no /status answer caught the backfill running"
    left = [p["requests_left"] for p in seen]
    assert left == sorted(left, reverse=True), left
    assert len(set(left)) >= 3, left  # it went down while /status watched
    for p in seen:
        assert p["eta_seconds"] == round(p["requests_left"] * SPACING, 1)
    order = ["day", "week", "deep", "done"]
    stages = [order.index(p["stage"]) for p in seen]
    assert stages == sorted(stages)
    final = seen[-1]
    assert final["stage"] == "done"
    assert final["requests_left"] == 0
    # four series, each: one request for the last day, one for the week, one for 3 days more
    assert [(s["name"], s["series"], s["requests_done"]) for s in final["stages"]] == [
        ("day", 4, 4),
        ("week", 4, 4),
        ("deep", 4, 4),
    ]
