"""The dashboard in a real headless Chromium, against the real daemon on the simulator.

One daemon (SQLite) serves the whole scenario, because its backfill is the slow part: the page
loads without a console error or a failed request; the table lists every configured series and
sorts and filters; the chart holds what /candles returns, and panning left loads older candles;
a hole punched into the database shows in the coverage strips at its place once detection
recorded it, and as stored or proven empty after the repair started from the page with the token
(which never appears in a URL); a screenshot is left in tests/artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture says why; under CI a missing playwright is a failure
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("playwright is not installed", allow_module_level=True)

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.timeframes import HOUR_MS, align, format_ts
from tests.browser.stack import backfilled, daemon_settings, detect_full, punch, sorted_keys
from tests.browser.support import ARTIFACTS, watch
from tests.e2e.daemon_process import start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory

TOKEN = "dash-token-7d1e0c55"
SYMBOLS = ("BTCUSD", "DOGEUSD", "ZRXUSD")
NATIVE = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")]
WAIT_MS = 30_000
BTC_1H = SeriesKey("BTCUSD", "1h")

# Which runs of a strip overlap [start, end): their states.
_STATES_OVER = """([selector, start, end]) => {
  const a = Date.parse(start), b = Date.parse(end);
  return [...document.querySelectorAll(selector + ' rect')]
    .filter((r) => Date.parse(r.dataset.start) < b && Date.parse(r.dataset.end) > a)
    .map((r) => r.dataset.state);
}"""


async def _chart_matches_api(page: Any, d: Any, series: SeriesKey) -> bool:
    chart = await page.evaluate("window.marketDataDashboard.chartCandles()")
    body = await d.json(
        "/candles", params={"symbol": series.symbol, "timeframe": series.timeframe, "limit": 1000}
    )
    api = body["candles"]
    if not chart or len(chart) != len(api):
        return False
    if chart[-1]["time"] * 1000 != _ms(api[-1]["ts"]):
        return False  # an hour just closed between the two reads: read again
    by_time = {_ms(c["ts"]) // 1000: c for c in api}
    for bar in chart:
        candle = by_time[bar["time"]]
        if not candle["final"]:
            continue  # still open: may have moved between the two reads
        got = (bar["open"], bar["high"], bar["low"], bar["close"])
        want = (candle["open"], candle["high"], candle["low"], candle["close"])
        assert got == want, (bar["time"], got, want)
    return True


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_dashboard_in_a_real_browser(
    tmp_path: Path, simulator_factory: SimulatorFactory, browser: Any
) -> None:
    sim: Simulator = await simulator_factory()
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    settings = daemon_settings(
        sim, url, SYMBOLS, "1m,1h,4h", API_TOKEN=TOKEN, GAP_REPAIR_MAX_REPAIRS_PER_RUN="0"
    )
    d = await start_daemon(tmp_path, "daemon", **settings)
    try:
        await wait_for(lambda: d.get("/health"), 30, "the API")
        await backfilled(d, NATIVE)
        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        problems = watch(page)
        await page.goto(f"http://127.0.0.1:{d.port}/?refresh=1")

        # Every configured series is a row.
        status = await d.json("/status")
        expected_rows = sorted_keys(status["series"])
        assert len(expected_rows) == len(SYMBOLS) * 3
        rows = page.locator("#series-table tbody tr")
        await expect(rows).to_have_count(len(expected_rows), timeout=WAIT_MS)
        keys = await rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
        assert sorted(keys) == expected_rows
        assert await page.evaluate("performance.getEntriesByName('table-drawn').length") == 1

        # Filtering, sorting, and the keyboard.
        await page.fill("#filter", "doge 1m")
        await expect(page.locator("#series-table tbody tr:not([hidden])")).to_have_count(1)
        await expect(page.locator('tr[data-key="DOGEUSD 1m"]')).to_be_visible()
        await page.fill("#filter", "")
        await page.click('th[data-key="candles"]')
        counts = await rows.evaluate_all(
            "rows => rows.map(r => Number(r.children[2].textContent.replace(/,/g, '')))"
        )
        assert counts == sorted(counts, reverse=True)
        await page.focus('tr[data-key="ZRXUSD 1h"]')
        await page.keyboard.press("Enter")
        await expect(
            page.locator('#chart[data-state="ready"][data-series="ZRXUSD 1h"]')
        ).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator('tr[data-key="ZRXUSD 1h"]')).to_have_attribute(
            "aria-selected", "true"
        )

        # The chart holds what /candles returns.
        await page.click(f'tr[data-key="{BTC_1H.symbol} {BTC_1H.timeframe}"]')
        await expect(
            page.locator('#chart[data-state="ready"][data-series="BTCUSD 1h"]')
        ).to_have_count(1, timeout=WAIT_MS)
        await wait_for(lambda: _chart_matches_api(page, d, BTC_1H), 15, "chart == /candles")

        # Panning left loads older candles from /candles, the same as /candles has there.
        await page.click('tr[data-key="BTCUSD 1m"]')
        await expect(
            page.locator('#chart[data-state="ready"][data-series="BTCUSD 1m"]')
        ).to_have_count(1, timeout=WAIT_MS)
        first_load = len(await page.evaluate("window.marketDataDashboard.chartCandles()"))
        assert first_load > 500
        box = await page.locator("#chart").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 3
        for _ in range(20):
            await page.mouse.move(box["x"] + 60, y)
            await page.mouse.down()
            await page.mouse.move(box["x"] + box["width"] - 120, y, steps=8)
            await page.mouse.up()
            held = await page.evaluate("window.marketDataDashboard.chartCandles().length")
            if held > first_load:
                break
        bars = await page.evaluate("window.marketDataDashboard.chartCandles()")
        assert len(bars) > first_load, "panning left loaded nothing older"
        older = await d.json(
            "/candles",
            params={
                "symbol": "BTCUSD",
                "timeframe": "1m",
                "start": str(bars[0]["time"] * 1000),
                "limit": 100,
            },
        )
        assert [(c["open"], c["high"], c["low"], c["close"]) for c in older["candles"]] == [
            (b["open"], b["high"], b["low"], b["close"]) for b in bars[:100]
        ]
        await page.click(f'tr[data-key="{BTC_1H.symbol} {BTC_1H.timeframe}"]')
        await expect(
            page.locator('#chart[data-state="ready"][data-series="BTCUSD 1h"]')
        ).to_have_count(1, timeout=WAIT_MS)

        # A hole punched into the database shows at its place once detected...
        hole_start = align(sim.market.now_ms(), "1h") - 20 * HOUR_MS
        hole_end = hole_start + 3 * HOUR_MS
        assert await punch(url, BTC_1H, hole_start, hole_end) == 3
        await detect_full(settings, tmp_path)
        start_iso, end_iso = format_ts(hole_start), format_ts(hole_end)
        gap_rect = f'rect[data-state="gap"][data-start="{start_iso}"][data-end="{end_iso}"]'
        await expect(page.locator(f"#detail-strip {gap_rect}")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator(f'tr[data-key="BTCUSD 1h"] svg {gap_rect}')).to_have_count(
            1, timeout=WAIT_MS
        )
        coverage = await d.json("/coverage", params={"symbol": "BTCUSD", "timeframe": "1h"})
        assert {"start": start_iso, "end": end_iso, "state": "gap"} in coverage["runs"]

        # ...and as stored or proven empty after a repair started from the page.
        await expect(page.locator("#repair-all")).to_be_hidden()
        await page.fill("#token-input", TOKEN)
        await page.click("#token-unlock")
        await expect(page.locator("#repair-all")).to_be_visible()
        await expect(page.locator("#backfill-series")).to_be_visible()
        # The token stays in the page's memory: nothing in the browser's storage.
        assert await page.evaluate("sessionStorage.length + localStorage.length") == 0
        assert await page.locator("#token-input").input_value() == ""
        await page.click("#repair-all")
        await expect(page.locator("#toast")).to_contain_text("repair", timeout=WAIT_MS)
        await page.wait_for_function(
            f"""(args) => {{
                const states = ({_STATES_OVER})(args);
                return states.length > 0 && states.every((s) => s === 'stored' || s === 'empty');
            }}""",
            arg=["#detail-strip", start_iso, end_iso],
            timeout=60_000,
        )
        repaired = await d.json(
            "/candles",
            params={
                "symbol": "BTCUSD",
                "timeframe": "1h",
                "start": str(hole_start),
                "end": str(hole_end),
            },
        )
        truth = sim.market.truth("BTCUSD", "1h", hole_start, hole_end)
        assert [c["ts"] for c in repaired["candles"]] == [format_ts(c.ts) for c in truth]

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard-browser-test.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        assert problems.any() == [], problems.any()
        assert not [u for u in problems.urls if TOKEN in u]
        assert len(problems.urls) > 20  # it did poll
        await page.close()
    except BaseException:
        print(f"--- daemon log (tail) ---\n{d.log()[-4000:]}")
        raise
    finally:
        await d.stop()
