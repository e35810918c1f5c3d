"""The daemon leaves storage faults by itself (issue 15, findings 1 and 5), made for real:
`chattr +i` on the SQLite file, and a small tmpfs filled to the last byte.

While the fault lasts /health answers 200 `degraded` naming it (a 503 would make a watchdog
restart a daemon that can still serve reads), and once it clears the daemon resumes within one
backoff step: start-up completes, the live stream runs, failed backfills are retried (the one at
start and one asked for over the API), and the stored candles match the exchange's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from market_data.models import SeriesKey
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, MINUTE_MS, align, now_ms
from tests.e2e.daemon_process import DaemonProcess, start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory
from tests.storage_faults import fill_disk, small_disk, write_protected

TOKEN = "faults-token-7d2e"
BTC = SeriesKey("BTCUSD", "1m")


def _settings(sim: Any, url: str, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD",
        "BITFINEX_TIMEFRAMES": "1m",
        "BACKFILL_DAYS": "0.5",
        "RATE_LIMIT_DELAY": "0",
        "WS_SAVE_FLUSH_SECONDS": "0.2",
        "WS_RECONNECT_INITIAL_BACKOFF": "0.2",
        "WS_RECONNECT_MAX_BACKOFF": "1",
        "API_TOKEN": TOKEN,
        **more,
    }


async def _health(d: DaemonProcess) -> tuple[int, dict[str, Any]]:
    response = await d.get("/health")
    return response.status_code, response.json()


async def _database_says(d: DaemonProcess, words: str) -> bool:
    code, body = await _health(d)
    database = body["checks"]["database"]
    return code == 200 and database["status"] == "degraded" and words in database["detail"]


async def _running(d: DaemonProcess) -> bool:
    status = await d.json("/status")
    code, body = await _health(d)
    subscribed = body["checks"]["websocket"]["detail"].startswith("1/1")
    return (
        code == 200
        and body["checks"]["database"]["status"] == "ok"
        and body["checks"]["daemon"]["detail"] == "running"
        and status["backfill"]["state"] == "done"
        and subscribed
    )


async def _matches_the_exchange(sim: Any, url: str, start_ms: int) -> bool:
    """Every closed 1m candle from `start_ms` to the last stored final one is stored, equal."""
    store = open_store(url)
    try:
        last = await store.last_candle(BTC, final_only=True)
        if last is None:
            return False
        stored = await store.candles_in_range(BTC, start_ms, last.ts + MINUTE_MS, 100_000)
    finally:
        await store.close()
    truth = sim.market.truth("BTCUSD", "1m", start_ms, last.ts + MINUTE_MS)
    mine = {c.ts: (c.open, c.high, c.low, c.close, c.volume) for c in stored if c.final}
    theirs = {c.ts: (c.open, c.high, c.low, c.close, c.volume) for c in truth}
    return bool(theirs) and mine == theirs


async def test_write_protected_database_at_start_recovers_without_a_restart(
    simulator_factory: SimulatorFactory, fresh_database_url: Any, tmp_path: Path
) -> None:
    """Finding 1: the file was write-protected after `db upgrade`; the daemon opened it
    read-only, retried on that connection for good and stayed `starting` (no WebSocket, no
    backfill) while /health said `database: ok`."""
    sim = await simulator_factory()
    url = fresh_database_url("sqlite")
    setup = open_store(url)
    await setup.upgrade()
    await setup.close()
    started_ms = now_ms()
    with write_protected(Path(url.removeprefix("sqlite:///"))) as release:
        d = await start_daemon(tmp_path, "protected", **_settings(sim, url))
        try:
            await wait_for(lambda: _database_says(d, "read-only"), 30, "/health: read-only")
            status = await d.json("/status")
            assert status["backfill"]["state"] == "pending", status["backfill"]
            release()
            # Start-up retries back off 1, 2, 4 s...: well within one step of 30 s.
            await wait_for(lambda: _running(d), 40, "the daemon running")
            start_ms = align(started_ms - DAY_MS // 2, "1m") + MINUTE_MS
            await wait_for(
                lambda: _matches_the_exchange(sim, url, start_ms), 30, "the exchange's candles"
            )
            code, _ = await d.stop()
            assert code == 0, d.log()[-3000:]
        finally:
            await d.kill()
    assert "Traceback" not in d.log(), d.log()[-3000:]


async def test_full_disk_is_reported_and_a_manual_backfill_is_retried(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Finding 5: /health said `database: ok` while every write failed; a backfill asked for
    over the API that failed on the full disk was not retried, and /health still called the
    backfill done."""
    sim = await simulator_factory()
    with small_disk(tmp_path / "disk", 16 * 1024 * 1024) as disk:
        url = f"sqlite:///{disk / 'md.db'}"
        d = await start_daemon(tmp_path, "full", **_settings(sim, url))
        try:
            await wait_for(lambda: _running(d), 40, "the daemon running")
            free_space = fill_disk(disk)
            response = await d.client.post(
                "/backfill", params={"days": "3"}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 202, response.text
            requested_ms = now_ms()
            await wait_for(lambda: _database_says(d, "full"), 30, "/health: full")
            metrics = (await d.get("/metrics")).text
            assert 'market_data_database_writes_failing{fault="full"} 1.0' in metrics

            async def backfill_retrying() -> bool:
                _, body = await _health(d)
                return body["checks"]["backfill"]["status"] != "ok"

            await wait_for(backfill_retrying, 30, "/health: the backfill is retrying")
            status = await d.json("/status")
            assert status["backfill"]["state"] == "running", status["backfill"]
            free_space()
            await wait_for(lambda: _running(d), 60, "the daemon back to ok")
            start_ms = align(requested_ms - 3 * DAY_MS, "1m") + MINUTE_MS
            await wait_for(
                lambda: _matches_the_exchange(sim, url, start_ms), 30, "the exchange's candles"
            )
            code, _ = await d.stop()
            assert code == 0, d.log()[-3000:]
        finally:
            await d.kill()
    assert "Traceback" not in d.log(), d.log()[-3000:]
