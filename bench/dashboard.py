"""The dashboard's first load with 600 series, measured in headless Chromium.

    .venv/bin/python bench/dashboard.py               # 600 series, 7 loads
    .venv/bin/python bench/dashboard.py --series 1200

The API (create_app on a built, not running, daemon: no exchange traffic) is served by uvicorn on
loopback from a SQLite file holding 600 series (200 pairs x 1m, 1h, 1d: their stats, detector
state and a few open gaps) and a day of 1m candles for the pair the page opens first. Each load
is a fresh browser context (nothing cached). The page marks `table-drawn` (performance.mark) once
every row is in the table; the figures are read from the browser's own timeline: the /status
response received (the baseline: what the table cannot be faster than) and the table drawn.
Target: table drawn, median <= 1,500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.support import chromium, missing_browser  # noqa: E402

from market_data.api.app import create_app  # noqa: E402
from market_data.config import load_settings  # noqa: E402
from market_data.daemon import Daemon  # noqa: E402
from market_data.models import Candle, SeriesKey  # noqa: E402
from market_data.storage.sql import open_store  # noqa: E402
from market_data.storage.tables import series_stats  # noqa: E402
from market_data.timeframes import (  # noqa: E402
    DAY_MS,
    MINUTE_MS,
    align,
    count_periods,
    next_open,
    now_ms,
    previous_open,
)

TIMEFRAMES = ("1m", "1h", "1d")
TARGET_MS = 1500.0
TIMELINE = """() => {
  const status = performance.getEntriesByType('resource')
    .find((e) => new URL(e.name).pathname === '/status');
  return {
    table: performance.getEntriesByName('table-drawn')[0].startTime,
    status: status ? status.responseEnd : null,
    dom: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
    rows: document.querySelectorAll('#series-table tbody tr').length,
  };
}"""


def symbol(i: int) -> str:
    return f"S{i:03d}USD"


async def prepare(url: str, pairs: int) -> None:
    store = open_store(url)
    await store.upgrade()
    now = now_ms()
    rows = []
    states = {}
    for i in range(pairs):
        for tf in TIMEFRAMES:
            last = previous_open(align(now, tf), tf)
            first = last - (365 * DAY_MS if tf != "1m" else 30 * DAY_MS)
            first = align(first, tf)
            count = count_periods(first, next_open(last, tf), tf)
            rows.append(
                {
                    "exchange": "bitfinex",
                    "symbol": symbol(i),
                    "timeframe": tf,
                    "candle_count": count,
                    "first_ts": first,
                    "last_ts": last,
                    "last_final_ts": last,
                }
            )
            states[SeriesKey(symbol(i), tf)] = (first, last)
    async with store.engine.begin() as conn:
        await conn.execute(series_stats.insert(), rows)
    await store.set_scan_states(states)
    minute = align(now, "1m")
    for i in range(0, pairs, 25):
        await store.create_gaps_many(
            {SeriesKey(symbol(i), "1m"): [(minute - 300 * MINUTE_MS, minute - 290 * MINUTE_MS)]}
        )
    # A day of candles for the series the page shows first (the table sorts by symbol).
    day = [
        Candle(symbol(0), "1h", minute - k * 3_600_000, 100.0, 101.0, 99.0, 100.5, 2.0, True)
        for k in range(1, 25)
    ]
    await store.upsert_candles(day)
    await store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(args: argparse.Namespace) -> int:
    reason = missing_browser()
    if reason:
        raise SystemExit(f"dashboard bench: {reason}")
    pairs = args.series // len(TIMEFRAMES)
    with tempfile.TemporaryDirectory(prefix="md-bench-dashboard-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'dashboard.db'}"
        await prepare(url, pairs)
        settings = load_settings(
            env_file=None,
            database_url=url,
            ws_ingestion_enabled=False,
            bitfinex_symbols=",".join(symbol(i) for i in range(pairs)),
            bitfinex_timeframes=",".join(TIMEFRAMES),
        )
        daemon = Daemon(settings)
        daemon.state.database_ready = True
        daemon.state.phase = "running"
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(daemon), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            samples: list[dict[str, float]] = []
            async with chromium() as browser:
                for n in range(args.loads + 1):
                    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
                    page = await context.new_page()
                    await page.goto(f"http://127.0.0.1:{port}/")
                    await page.wait_for_selector("body[data-table-drawn]", timeout=30_000)
                    timeline = await page.evaluate(TIMELINE)
                    assert timeline["rows"] == pairs * len(TIMEFRAMES), timeline
                    if n:  # the first load warms the server (imports, caches): not counted
                        samples.append(timeline)
                    await context.close()
        finally:
            server.should_exit = True
            await serving
            await daemon.rest.aclose()
            await daemon.store.close()
    print(
        f"dashboard first load, {pairs * len(TIMEFRAMES)} series, {len(samples)} cold loads "
        "(fresh browser context each), ms since navigation start:"
    )
    print(f"  {'':34} {'median':>8} {'min':>8} {'max':>8}")
    for key, name in (
        ("dom", "DOMContentLoaded"),
        ("status", "/status received (baseline)"),
        ("table", "table drawn (performance mark)"),
    ):
        values = [s[key] for s in samples]
        print(f"  {name:34} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    table = statistics.median(s["table"] for s in samples)
    baseline = statistics.median(s["status"] for s in samples)
    ok = table <= TARGET_MS
    print(
        f"  table drawn {table:.0f} ms (target <= {TARGET_MS:.0f} ms): "
        f"{'ok' if ok else 'MISSED'}; x{table / baseline:.2f} of /status received, "
        f"{table - baseline:.0f} ms after it (the panels' other requests, building the rows)"
    )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=600)
    parser.add_argument("--loads", type=int, default=7)
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
