"""`market-data gaps detect|repair|list` and `market-data cleanup` in a subprocess: output and
exit codes (0 done, 1 failure, 2 bad usage), against the simulator and a SQLite file."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, HOUR_MS, align
from tests.integration.gap_support import fill, make_settings, punch, rig

BTC1H = SeriesKey("BTCUSD", "1h")


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "market_data",
        "--env-file",
        "",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_gap_and_cleanup_commands(tmp_path: Path, simulator: Simulator) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(url)
    await store.upgrade()
    settings = make_settings(url, simulator.rest_url)
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start = align(now - 4 * DAY_MS, "1d")
    await fill(r.sink, simulator, "BTCUSD", "1h", start, align(now, "1h"))
    # A day back: far from RETENTION_1H's two-day floor, which moves on with the market's clock
    # while the commands run (a hole at start + 3 days could be as old as the floor itself).
    hole = (align(now - DAY_MS, "1h"), align(now - DAY_MS, "1h") + 2 * HOUR_MS)
    await punch(store, BTC1H, *hole)
    await r.close()
    await store.close()

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "GAP_"))},
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": simulator.rest_url,
        "BITFINEX_SYMBOLS": "BTCUSD",
        "BITFINEX_TIMEFRAMES": "1h",
        "RATE_LIMIT_DELAY": "0",
        "RETENTION_1H": "2",
        "LOG_LEVEL": "INFO",
    }
    bad_db = {**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}
    usage, unreachable, bad_setting = await asyncio.gather(
        cli(env, "gaps", "repair", "--max", "-1"),
        cli(bad_db, "gaps", "detect"),
        cli({**env, "GAP_REPAIR_MAX_REPAIRS_PER_RUN": "lots"}, "gaps", "repair"),
    )
    assert usage[0] == 2
    assert unreachable[0] == 1
    assert "gap detection failed" in unreachable[2]
    assert bad_setting[0] == 2
    assert "GAP_REPAIR_MAX_REPAIRS_PER_RUN" in bad_setting[2]

    code, out, err = await cli(env, "gaps", "detect")
    assert code == 0, err
    assert "1 new gaps in 1 series; open gaps: 1" in out
    assert "Gap detected: BTCUSD/1h from" in err

    code, out, _ = await cli(env, "gaps", "list", "--open")
    assert code == 0
    assert "BTCUSD/1h" in out
    assert "open" in out

    code, out, err = await cli(env, "gaps", "repair", "--max", "5")
    assert code == 0, err
    assert "1 repaired" in out
    assert "open gaps: 0" in out
    assert "Repaired gap with 2 candles" in err

    code, out, _ = await cli(env, "gaps", "list")
    assert code == 0
    assert "repaired" in out

    code, out, err = await cli(env, "cleanup")
    assert code == 0, err
    assert out.startswith("Deleted ")
    assert "Deleted 0 " not in out
