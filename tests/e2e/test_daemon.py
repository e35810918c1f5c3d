"""The daemon as a subprocess against the simulator, on SQLite and PostgreSQL at the same time.

One test runs both backends side by side, so the one wait that needs real time (a 1m candle
closing on the live WebSocket stream) is paid once: start, API answers, backfill completes, a
repair is triggered over the API with the token, live candles arrive, SIGTERM ends it with exit 0
within 10 s, and every closed candle received before the signal is in the database with the
simulator's values. No secret appears in any response or in the logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from market_data.models import SeriesKey
from market_data.simulator import Simulator
from market_data.storage.sql import open_store
from market_data.timeframes import MINUTE_MS, next_open
from tests.e2e.daemon_process import DaemonProcess, start_daemon, wait_for

TOKEN = "e2e-token-5c0ffee1d"
PASSWORD = "pg-secret-9f2b7a"
SYMBOLS = ("BTCUSD", "DOGEUSD")
NATIVE = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")]
LIVE_WAIT_S = 150.0  # a 1m candle closes and is flushed ~62 s after subscribing; room for load


def _settings(sim: Simulator, url: str, log_format: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": ",".join(SYMBOLS),
        "BITFINEX_TIMEFRAMES": "1m,1h,4h",
        "BACKFILL_DAYS": "0.2",
        "RATE_LIMIT_DELAY": "0.01",
        "GAP_DETECTION_INTERVAL_MINUTES": "0.1",
        "GAP_REPAIR_INTERVAL_MINUTES": "0.1",
        "CLEANUP_INITIAL_DELAY_MINUTES": "0.05",
        "WS_SAVE_FLUSH_SECONDS": "0.5",
        "API_TOKEN": TOKEN,
        "LOG_FORMAT": log_format,
    }


async def _backfill_done(d: DaemonProcess) -> bool:
    jobs = (await d.json("/jobs", params={"job_type": "backfill", "limit": 50}))["jobs"]
    done = {(j["symbol"], j["timeframe"]) for j in jobs if j["status"] == "success"}
    return all((k.symbol, k.timeframe) in done for k in NATIVE)


async def _series(d: DaemonProcess, symbol: str, timeframe: str) -> dict[str, Any]:
    body = await d.json("/status")
    return next(s for s in body["series"] if (s["symbol"], s["timeframe"]) == (symbol, timeframe))


async def _trigger_repair(d: DaemonProcess) -> bool:
    response = await d.client.post(
        "/gaps/repair", params={"max": 5}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code in (202, 409), response.text  # 409: the loop is repairing now
    return response.status_code == 202


async def _scenario(
    sim: Simulator, url: str, tmp_path: Path, name: str, log_format: str
) -> tuple[float, DaemonProcess]:
    d = await start_daemon(tmp_path, name, **_settings(sim, url, log_format))
    try:
        health = await wait_for(lambda: d.get("/health"), 20, f"{name}: the API")
        assert health.status_code in (200, 503)
        await wait_for(lambda: _backfill_done(d), 60, f"{name}: backfill jobs to succeed")
        first = await _series(d, "BTCUSD", "1m")
        assert first["candle_count"] > 200
        baseline = first["last_closed_candle"]

        await wait_for(lambda: _trigger_repair(d), 20, f"{name}: POST /gaps/repair accepted")
        for path in ("/status", "/health", "/metrics", "/jobs", "/gaps"):
            text = (await d.get(path)).text
            assert PASSWORD not in text, path
            assert TOKEN not in text, path

        async def live() -> bool:
            status = await d.json("/status")
            btc = next(
                s for s in status["series"] if s["symbol"] == "BTCUSD" and s["timeframe"] == "1m"
            )
            return status["written_by_source"].get("ws", 0) > 0 and (
                btc["last_closed_candle"] > baseline
            )

        await wait_for(live, LIVE_WAIT_S, f"{name}: a new closed 1m candle from the stream", 1.0)
        health = await d.json("/health")
        assert health["checks"]["websocket"]["status"] == "ok", health
        assert health["checks"]["database"]["status"] == "ok", health
        metrics = (await d.get("/metrics")).text
        assert 'market_data_candles_written_total{source="ws"}' in metrics
        assert 'market_data_ws_connections{state="subscribed"} 1.0' in metrics

        signalled = time.time()
        code, seconds = await d.stop()
        assert code == 0, d.log()[-3000:]
        assert seconds < 10, seconds
        return signalled, d
    except BaseException:
        await d.kill()
        print(f"--- {name} daemon log (tail) ---\n{d.log()[-6000:]}")  # shown on failure
        raise


async def _check_database(sim: Simulator, url: str, signalled: float) -> None:
    cutoff = int(signalled * 1000) - 2000  # closed at least 2 s before the signal
    store = open_store(url)
    try:
        jobs = await store.list_jobs(limit=1000)
        assert not [j for j in jobs if j.status == "running"], "a job was left running"
        for symbol in SYMBOLS:
            for tf in ("1m", "1h"):
                key = SeriesKey(symbol, tf)
                first = await store.first_candle(key)
                assert first is not None, key
                stored = await store.candles_in_range(key, first.ts, cutoff, limit=100_000)
                truth = [
                    c
                    for c in sim.market.truth(symbol, tf, first.ts, cutoff)
                    if next_open(c.ts, tf) <= cutoff
                ]
                got = {c.ts: c for c in stored}
                missing = [c.ts for c in truth if c.ts not in got]
                assert not missing, f"{key}: {len(missing)} closed candles missing: {missing[:5]}"
                for c in truth:
                    mine = got[c.ts]
                    assert (mine.open, mine.high, mine.low, mine.close) == (
                        c.open,
                        c.high,
                        c.low,
                        c.close,
                    ), (key, c, mine)
                    assert mine.volume == pytest.approx(c.volume, rel=1e-9), (key, c, mine)
                if tf == "1m":
                    # The comparison above reached the signal (some minutes have no trades, so
                    # the newest candle may be a few minutes before it).
                    assert truth[-1].ts >= cutoff - 10 * MINUTE_MS, (key, truth[-1].ts, cutoff)
    finally:
        await store.close()


def _check_logs(d: DaemonProcess, log_format: str) -> None:
    text = d.log()
    assert PASSWORD not in text
    assert TOKEN not in text
    assert "Stopped in" in text
    assert "Backfill complete" in text
    if log_format == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert any("Starting market-data" in entry["message"] for entry in lines)
    else:
        assert "Starting market-data: database=" in text


async def test_daemon_on_sqlite_and_postgres(
    simulator: Simulator, fresh_database_url: Any, tmp_path: Path
) -> None:
    backends: list[tuple[str, str, str]] = [("sqlite", fresh_database_url("sqlite"), "text")]
    try:
        pg = fresh_database_url("postgres")
    except pytest.skip.Exception:
        pg = None  # PostgreSQL unavailable here: the SQLite half still runs
    if pg is not None:
        # Trust authentication ignores the password; it is there to prove it never leaks.
        backends.append(("postgres", pg.replace("postgres@", f"postgres:{PASSWORD}@", 1), "json"))
    results = await asyncio.gather(
        *(_scenario(simulator, url, tmp_path, name, fmt) for name, url, fmt in backends)
    )
    for (_, url, fmt), (signalled, d) in zip(backends, results, strict=True):
        _check_logs(d, fmt)
        await _check_database(simulator, url, signalled)
