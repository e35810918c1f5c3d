"""The chaos run: the daemon under every fault at once, then proof that nothing was lost or wrong.

Runs alone, after the main suite (`pytest -m chaos`): it restarts the PostgreSQL server.

1. The simulator (in this process) with every fault switched on: REST 429 storms with bans, 5xx,
   slow answers; WebSocket connections dropped after N messages, 20051 restarts, maintenance
   windows (20060 ... 20061), silent stalls, lost updates; broken candle rows on both.
2. The daemon (a subprocess) on a fresh PostgreSQL database: BTCUSD, DOGE:USD, the thin pair and
   a pair listed 1.5 days ago; 1m and 4h (derived from 1h); three days of backfill.
3. SIGKILL while jobs are running, then a restart (the killed run's jobs must end `failed`).
4. A PostgreSQL restart in the middle of the live stream and the maintenance loops.
5. Faults off; wait (with deadlines) until the daemon has converged; SIGTERM (exit 0).
6. Every closed candle from the backfill's start to the last closed period equals the
   simulator's truth; no duplicates; every gap repaired or closed empty; no job left running.

Run with `-s` to see what was injected and compared; the figures also go to a JSON file.
docs/CHAOS.md describes the run.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from market_data.models import SeriesKey
from market_data.simulator import DEFAULT_PAIRS, NEW_PAIR, Simulator, run_simulator
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, MINUTE_MS, align
from tests.e2e.chaos_support import (
    EXPECTED_FAULTS,
    SeriesFigures,
    all_faults,
    compare_series,
    database_checks,
    fault_figures,
    faults_off,
    figures_json,
    restart_postgres,
    running_job_ids,
    statuses_of,
)
from tests.e2e.daemon_process import DaemonProcess, start_daemon, wait_for
from tests.plugins.sim import fast_config

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(420)]

SYMBOLS = ("BTCUSD", "DOGEUSD", "ZRXUSD", "APTUSD")
TIMEFRAMES = ("1m", "4h")
NATIVE = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")]
DERIVED = [SeriesKey(s, "4h") for s in SYMBOLS]
BACKFILL_DAYS = 3.0
TOKEN = "chaos-token-7d1e"
CHAOS_SECONDS = 120.0  # at least this long under faults, and until every fault has fired
CONVERGE_SECONDS = 150.0
REST_CORRUPT_SECONDS = 40.0


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    # It restarts the PostgreSQL server under every other test: run it alone, on purpose.
    if "chaos" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the chaos run restarts the database server: run it alone with -m chaos")


def _pairs() -> tuple[Any, ...]:
    # The recently listed pair starts inside the backfill window (its history begins there).
    return tuple(
        dataclasses.replace(p, listed_days_ago=1.5) if p.symbol == NEW_PAIR else p
        for p in DEFAULT_PAIRS
    )


def _settings(sim: Simulator, url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD,DOGE:USD,ZRXUSD,tAPTUSD",
        "BITFINEX_TIMEFRAMES": ",".join(TIMEFRAMES),
        "BACKFILL_DAYS": str(BACKFILL_DAYS),
        "REST_UPDATE_ENABLED": "true",
        "UPDATE_INTERVAL_SECONDS": "5",
        "WS_SAVE_FLUSH_SECONDS": "0.2",
        "WS_HEARTBEAT_TIMEOUT_SECONDS": "2",
        "WS_RECONNECT_INITIAL_BACKOFF": "0.2",
        "WS_RECONNECT_MAX_BACKOFF": "1",
        "GAP_DETECTION_INTERVAL_MINUTES": "0.1",
        "GAP_REPAIR_INTERVAL_MINUTES": "0.1",
        "GAP_REPAIR_MAX_REPAIRS_PER_RUN": "0",
        "RATE_LIMIT_DELAY": "0.05",
        "RATE_LIMIT_MAX_RETRIES": "20",
        "RATE_LIMIT_INITIAL_BACKOFF": "0.2",
        "RATE_LIMIT_MIN_BACKOFF_SECONDS": "0.5",
        "RATE_LIMIT_MAX_BACKOFF": "1",
        "API_TOKEN": TOKEN,
        "LOG_LEVEL": "INFO",
    }


async def _sigkill_while_running(d: DaemonProcess, url: str) -> list[int]:
    """SIGKILL the daemon at a moment when it has jobs running; those jobs' ids."""
    running: list[int] = []

    async def jobs_running() -> bool:
        nonlocal running
        running = await running_job_ids(url)
        return bool(running)

    await wait_for(jobs_running, 60, "a running job to kill the daemon under", every=0.05)
    d.proc.send_signal(signal.SIGKILL)
    await d.proc.wait()
    await d.client.aclose()
    return running


async def _converged(d: DaemonProcess, sim: Simulator, store: Any) -> bool:
    """Backfill done, no gap open, and the newest closed period of every native series stored
    final with the exchange's values."""
    status = await d.json("/status")
    if status["backfill"]["state"] != "done":
        return False
    if await store.count_open_gaps():
        return False
    now = int(time.time() * 1000)
    for key in NATIVE:
        closed_before = align(now, key.timeframe) - (5_000 if key.timeframe == "1m" else 0)
        truth = sim.market.truth(
            key.symbol, key.timeframe, closed_before - 30 * MINUTE_MS, closed_before
        )
        if not truth:
            continue  # a thin pair may not have traded in the last half hour
        newest = truth[-1]
        stored = await store.candles_in_range(key, newest.ts, newest.ts + 1)
        if not stored or not stored[0].final or not stored[0].same_values(newest):
            return False
    return True


def _report(path: Path, figures: dict[str, Any]) -> None:
    path.write_text(json.dumps(figures, indent=2, sort_keys=True))
    faults = figures["injected"]
    print("\n=== chaos run: injected ===")
    print(f"faults fired: {faults['faults_fired']}")
    print(
        f"REST 429s: {faults['rest_429']}, REST 5xx: {faults['rest_5xx']}, "
        f"WS connections opened: {faults['ws_connections_opened']}, "
        f"PostgreSQL restarts: 1 ({figures['postgres_restart_seconds']:.1f} s), "
        f"SIGKILLs: 1 (jobs running then: {len(figures['killed_jobs'])})"
    )
    print("=== chaos run: compared ===")
    for row in figures["series"]:
        print(
            f"{row['series']:>12}: {row['compared']:6d} candles compared, "
            f"missing {row['missing']}, different {row['different']}, extra {row['extra']}, "
            f"not final {row['not_final']}"
        )
    db = figures["database"]
    print(f"quarantined (invalid rows refused): {db['quarantined_by_source']}")
    print(
        f"duplicates: {db['duplicate_candles']}, gaps: {db['gaps_by_status']}, "
        f"gaps not closed: {db['gaps_not_closed']}, jobs running: {db['jobs_running']}"
    )
    print(f"figures written to {path}")


async def test_chaos(fresh_database_url: Callable[[str], str], tmp_path: Path) -> None:
    url = fresh_database_url("postgres")
    figures: dict[str, Any] = {}
    config = fast_config(
        pairs=_pairs(),
        faults=all_faults(),
        seed=4242,
        rest_rate_limit=240,
        rest_rate_window=60.0,
        rest_ban_seconds=2.0,
    )
    async with run_simulator(config) as sim:
        began = time.monotonic()
        first_start_ms = int(time.time() * 1000)
        first = await start_daemon(tmp_path, "run1", **_settings(sim, url))
        try:
            killed = await _sigkill_while_running(first, url)
        except BaseException:
            await first.kill()
            raise
        figures["killed_jobs"] = killed

        d = await start_daemon(tmp_path, "run2", **_settings(sim, url))
        store = None
        try:
            await wait_for(lambda: d.get("/health"), 30, "the restarted daemon's API")

            async def streaming() -> bool:
                status = await d.json("/status")
                return status["written_by_source"].get("ws", 0) > 0

            await wait_for(streaming, 60, "live candles from the stream", every=0.5)
            figures["postgres_restart_seconds"] = await restart_postgres()

            async def every_fault_fired() -> bool:
                if time.monotonic() - began > REST_CORRUPT_SECONDS:
                    # Gaps that met broken rows back off for minutes; stop breaking REST rows
                    # early so those retries land inside the convergence deadline.
                    sim.set_faults(rest_corrupt_rate=0.0)
                fired = sim.stats.faults_fired
                return time.monotonic() - began >= CHAOS_SECONDS and all(
                    fired[name] > 0 for name in EXPECTED_FAULTS
                )

            await wait_for(every_fault_fired, 120, "every fault to have fired", every=1.0)
            assert d.alive, d.log()[-4000:]
            faults_off(sim)
            figures["chaos_seconds"] = round(time.monotonic() - began, 1)

            store = open_store(url)
            await wait_for(
                lambda: _converged(d, sim, store),
                CONVERGE_SECONDS,
                "the daemon to converge (backfill done, no open gap, newest candles)",
                every=1.0,
            )
            cutoff_ms = int(time.time() * 1000)
            figures["converge_seconds"] = round(
                time.monotonic() - began - figures["chaos_seconds"], 1
            )
            code, seconds = await d.stop()
            assert code == 0, d.log()[-4000:]
            figures["sigterm_exit_seconds"] = round(seconds, 2)
        except BaseException:
            await d.kill()
            if store is not None:
                await store.close()
            raise

        assert store is not None
        try:
            start_ms = first_start_ms - int(BACKFILL_DAYS * DAY_MS)
            compared: list[SeriesFigures] = []
            for key in NATIVE + DERIVED:
                compared.append(
                    await compare_series(
                        store, sim, key, start_ms, cutoff_ms, derived=key in DERIVED
                    )
                )
            db = await database_checks(store)
            killed_states = await statuses_of(store, killed)
        finally:
            await store.close()
        figures["injected"] = fault_figures(sim)
    figures["series"] = figures_json(compared)
    figures["database"] = db
    figures["killed_job_states"] = {str(k): v[0] for k, v in killed_states.items()}
    figures["wall_seconds"] = round(time.monotonic() - began, 1)
    _report(tmp_path / "chaos-figures.json", figures)

    assert all(f.compared > 0 for f in compared), figures["series"]
    bad = [f for f in compared if f.bad]
    assert not bad, "\n".join(f"{f.series}: {f.examples}" for f in bad)
    assert db["duplicate_candles"] == 0
    assert db["duplicate_gaps"] == 0
    assert db["gaps_not_closed"] == 0, db["gaps_by_status"]
    assert db["jobs_running"] == 0, db["jobs_by_type_and_status"]
    assert killed, "the SIGKILL should have caught jobs running"
    assert all(state == "failed" for state, _ in killed_states.values()), killed_states
    assert all(name in figures["injected"]["faults_fired"] for name in EXPECTED_FAULTS)
    # Broken rows were refused and kept where an operator sees them.
    assert sum(db["quarantined_by_source"].values()) > 0, db
    assert "Traceback" not in d.log(), d.log()[-4000:]
