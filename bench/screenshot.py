"""Regenerate the README's dashboard screenshot (docs/dashboard.png) from a real run.

    .venv/bin/python bench/screenshot.py                  # writes docs/dashboard.png
    .venv/bin/python bench/screenshot.py --output /tmp/d.png --keep-open 600

Starts the simulator and the daemon (SQLite in a temporary directory), waits for the backfill,
punches two holes into the database and runs a full gap detection so open gaps show, then opens
the dashboard in headless Chromium (/usr/bin/chromium) and takes a full-page screenshot.
`--keep-open N` leaves everything running N seconds and prints the URL (to look at it live).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.stack import (  # noqa: E402
    backfilled,
    daemon_settings,
    detect_full,
    punch,
    repair_now,
)
from tests.browser.support import chromium, missing_browser  # noqa: E402
from tests.e2e.daemon_process import start_daemon, wait_for  # noqa: E402

from market_data.models import SeriesKey  # noqa: E402
from market_data.simulator import SimulatorConfig, run_simulator  # noqa: E402
from market_data.timeframes import HOUR_MS, MINUTE_MS, align  # noqa: E402

SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD", "DOGEUSD", "ZRXUSD", "APTUSD")
TIMEFRAMES = "1m,1h,4h,1d"
SELECTED = "ETHUSD/1h"
TOKEN = "screenshot-token"  # this run's own daemon only
# Every strip in the table's visible part has been drawn.
VISIBLE_STRIPS_LOADED = """() => {
  const view = document.querySelector('.table-wrap').getBoundingClientRect();
  return [...document.querySelectorAll('#series-table tbody tr:not([hidden])')]
    .filter((tr) => {
      const r = tr.getBoundingClientRect();
      return r.bottom > view.top && r.top < view.bottom;
    })
    .every((tr) => tr.querySelector('svg').dataset.loaded === 'true');
}"""


async def main(output: Path, keep_open: float) -> None:
    reason = missing_browser()
    if reason:
        raise SystemExit(f"screenshot: {reason}")
    config = SimulatorConfig(
        port=0, seed=7, rest_rate_limit=100_000, ws_connection_limit=10_000, ws_heartbeat_seconds=5
    )
    with tempfile.TemporaryDirectory(prefix="md-screenshot-") as tmp:
        async with run_simulator(config) as sim:
            url = f"sqlite:///{Path(tmp) / 'market_data.db'}"
            settings = daemon_settings(
                sim,
                url,
                SYMBOLS,
                TIMEFRAMES,
                BACKFILL_DAYS="3",
                API_TOKEN=TOKEN,
                GAP_REPAIR_MAX_REPAIRS_PER_RUN="0",
            )
            d = await start_daemon(Path(tmp), "daemon", **settings)
            try:
                await wait_for(lambda: d.get("/health"), 30, "the API")
                native = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h", "1d")]
                await backfilled(d, native)
                # Settle what the backfill left (quiet minutes are proven empty), so the open
                # gaps on the picture are the two holes punched below.
                await repair_now(d, TOKEN)
                now = sim.market.now_ms()
                hour = align(now, "1h")
                await punch(
                    url, SeriesKey("ETHUSD", "1h"), hour - 40 * HOUR_MS, hour - 36 * HOUR_MS
                )
                minute = align(now, "1m")
                await punch(
                    url,
                    SeriesKey("SOLUSD", "1m"),
                    minute - 2000 * MINUTE_MS,
                    minute - 1900 * MINUTE_MS,
                )
                print(await detect_full(settings, Path(tmp)))
                base = f"http://127.0.0.1:{d.port}"
                async with chromium() as browser:
                    page = await browser.new_page(
                        viewport={"width": 1440, "height": 1000}, device_scale_factor=1
                    )
                    await page.goto(f"{base}/?refresh=2#{SELECTED}")
                    await page.wait_for_selector("#chart[data-state=ready]")
                    await page.wait_for_function(
                        "document.querySelectorAll('#series-table svg[data-loaded=true]').length"
                        " >= 10"
                    )
                    await page.wait_for_selector("#detail-strip rect.gap")
                    # Series with open gaps first, the way an operator would look.
                    await page.click('th[data-key="gaps"]')
                    await page.wait_for_function(VISIBLE_STRIPS_LOADED)
                    output.parent.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(output), full_page=True)
                    print(f"screenshot: {output}")
                    if keep_open > 0:
                        print(f"dashboard at {base}/ for {keep_open:.0f} s")
                        await asyncio.sleep(keep_open)
            finally:
                await d.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--keep-open", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    asyncio.run(main(args.output, args.keep_open))
