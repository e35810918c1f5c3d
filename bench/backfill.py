"""Backfill benchmark: requests used against the minimum, and end-to-end speed into PostgreSQL
next to the store's own bulk-upsert rate, measured in the same run.

    .venv/bin/python bench/backfill.py [--days 180] [--symbols BTCUSD,ETHUSD,SOLUSD,DOGE:USD]

(a) requests: a backfill of every series, then `requests / sum(ceil(candles / 10,000))` per
    scenario. Target <= 1.05, plus at most one request per series and stage (recent first: the
    last day, the week before it and the deep rest are walked apart, three stages at most).
(b) speed: the simulator runs in a child process (its own core, rate limit off); the backfill
    (RATE_LIMIT_DELAY=0) fetches `--days` of 1m for every symbol into an empty PostgreSQL
    database. Then the same number of candles is upserted straight through
    `store.upsert_candles` in 10,000-row pages into another empty database.
    Target: backfill candles/s >= 0.5 x the store's bulk-upsert candles/s.
Temporary databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import asyncpg

from market_data.config import Settings, load_settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle
from market_data.rate_limiter import RateLimiter
from market_data.services.backfill import BackfillReport, BackfillService
from market_data.services.sink import CandleSink
from market_data.simulator import SimulatorConfig, run_simulator
from market_data.simulator.market import Market
from market_data.simulator.pairs import PairSpec, pairs_by_name
from market_data.storage.sql import SqlStore, open_store

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PAGE = 10_000
NO_RETENTION = {"1m": 0, "1h": 0, "4h": 0, "1d": 0}
REQUEST_TARGET = 1.05
STAGES = 3  # a series' range is walked in up to three stages, one request each at least
SPEED_TARGET = 0.5


# --- the simulator, in its own process ----------------------------------------------------------


def _serve(config: SimulatorConfig, conn: Connection, cache_hours: int) -> None:
    # The market computes candles on demand and keeps 4096 hours by default; a larger cache
    # lets the second (warm) run measure the backfill rather than the simulator's generator.
    defaults = Market.__init__.__kwdefaults__
    if defaults is not None:
        defaults["cache_hours"] = cache_hours

    async def main() -> None:
        async with run_simulator(config) as sim:
            conn.send(sim.rest_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


class ChildSimulator:
    def __init__(self, config: SimulatorConfig, cache_hours: int = 4096) -> None:
        self._parent, child = mp.Pipe()
        self._proc = mp.get_context("spawn").Process(
            target=_serve, args=(config, child, cache_hours), daemon=True
        )

    def __enter__(self) -> str:
        self._proc.start()
        if not self._parent.poll(60):
            raise RuntimeError("the simulator did not start")
        return str(self._parent.recv())

    def __exit__(self, *exc: object) -> None:
        self._parent.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()


# --- databases ----------------------------------------------------------------------------------


async def create_database() -> str:
    name = f"md_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{ADMIN_URL.rpartition('/')[0]}/{name}"


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrated(url: str) -> SqlStore:
    store = open_store(url)
    await store.upgrade()
    return store


# --- measurements -------------------------------------------------------------------------------


def settings_for(url: str, rest_url: str, symbols: str, timeframes: str, days: float) -> Settings:
    return load_settings(
        env_file=None,
        database_url=url,
        bitfinex_rest_url=rest_url,
        bitfinex_symbols=symbols,
        bitfinex_timeframes=timeframes,
        backfill_days=days,
        retention_days=NO_RETENTION,
        rate_limit_delay=0,
        log_level="WARNING",
    )


async def backfill(settings: Settings, store: SqlStore) -> tuple[BackfillReport, float]:
    limiter = RateLimiter.from_settings(settings)
    async with BitfinexRest(settings.bitfinex_rest_url, limiter) as rest:
        exchange = BitfinexExchange(rest, settings.bitfinex_ws_url)
        service = BackfillService(settings, store, exchange, CandleSink(store, settings))
        started = time.perf_counter()
        report = await service.run()
        return report, time.perf_counter() - started


async def request_ratio(store: SqlStore, report: BackfillReport) -> tuple[int, int, int]:
    """(requests used, the minimum, native series) for a finished backfill."""
    counts = {(s.symbol, s.timeframe): s.candle_count for s in await store.series_stats()}
    natives = [r for r in report.results if r.requests]
    minimum = sum(max(1, math.ceil(counts.get((r.symbol, r.timeframe), 0) / PAGE)) for r in natives)
    return report.requests, minimum, len(natives)


def same_candles(pairs: Sequence[PairSpec], days: float, count: int) -> list[Candle]:
    """`count` 1m candles like the backfilled ones, on other symbols (an empty key range)."""
    market = Market(1, pairs, history_days=days + 2)
    now = market.now_ms()
    out: list[Candle] = []
    for i, spec in enumerate(pairs):
        for c in market.truth(spec.symbol, "1m", now - int(days * 86_400_000), now):
            out.append(replace(c, symbol=f"BENCH{i}USD"))
    return out[:count]


async def bulk_upsert_rate(url: str, candles: list[Candle]) -> float:
    store = await migrated(url)
    try:
        started = time.perf_counter()
        for i in range(0, len(candles), PAGE):
            await store.upsert_candles(candles[i : i + PAGE])
        return len(candles) / (time.perf_counter() - started)
    finally:
        await store.close()


async def scenario_requests(rest_url: str) -> list[tuple[str, int, int, int]]:
    """Request efficiency on mixed series (thin, colon, recently listed, 1m/1h/4h), SQLite."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/requests.db"
        settings = settings_for(url, rest_url, "BTCUSD,DOGE:USD,ZRXUSD,APTUSD", "1m,1h,4h", 60)
        store = await migrated(url)
        try:
            report, _ = await backfill(settings, store)
            rows.append(("mixed 60 d (1m,1h,4h)", *await request_ratio(store, report)))
        finally:
            await store.close()
    return rows


async def main(args: argparse.Namespace) -> int:
    names = [s.strip() for s in args.symbols.split(",") if s.strip()]
    pairs = tuple(
        replace(p, trade_probability=args.trade_probability) for p in pairs_by_name(names)
    )
    extra = tuple(p for p in pairs_by_name(["ZRXUSD", "APTUSD"]) if p not in pairs)
    config = SimulatorConfig(
        port=0, seed=1, pairs=pairs + extra, history_days=args.days + 5, rest_rate_limit=0
    )
    hours = int((args.days + 6) * 24 * len(config.pairs)) + 1000
    ok = True
    with ChildSimulator(config, cache_hours=hours) as rest_url:
        print(f"simulator at {rest_url} (child process); PostgreSQL at {ADMIN_URL}")
        urls = [await create_database() for _ in range(3)]
        try:
            runs = []
            for url in urls[:2]:  # cold: the simulator generates; warm: it serves its cache
                store = await migrated(url)
                try:
                    settings = settings_for(url, rest_url, ",".join(names), "1m", args.days)
                    report, seconds = await backfill(settings, store)
                    if not report.ok:
                        print(f"backfill failed: {report}")
                        return 1
                    used, minimum, series = await request_ratio(store, report)
                    candles = sum(s.candle_count for s in await store.series_stats())
                finally:
                    await store.close()
                runs.append((candles, seconds))
            direct = await bulk_upsert_rate(urls[2], same_candles(pairs, args.days, candles))
        finally:
            for url in urls:
                await drop_database(url)
        rows = [(f"{len(names)} x 1m {args.days:g} d", used, minimum, series)]
        rows += await scenario_requests(rest_url)

    print("\n(a) requests used / minimum (sum of ceil(candles / 10,000) per series)")
    for name, used, minimum, series in rows:
        ratio = used / minimum
        good = used <= REQUEST_TARGET * minimum + STAGES * series
        ok &= good
        print(
            f"  {name:<24} {used:>5} used  {minimum:>5} minimum  ratio {ratio:.3f}  "
            f"({series} series; target <= {REQUEST_TARGET} x minimum + {STAGES}/series) "
            f"{'OK' if good else 'MISSED'}"
        )
    print("\n(b) end-to-end into PostgreSQL, RATE_LIMIT_DELAY=0, simulator rate limit off")
    print(
        f"  store bulk       {candles:>9,} candles, 10,000-row pages    = {direct:>9,.0f} candles/s"
    )
    for label, (count, seconds) in zip(("cold", "warm"), runs, strict=True):
        rate = count / seconds
        print(
            f"  backfill ({label})  {count:>9,} candles in {seconds:6.1f} s "
            f"= {rate:>9,.0f} candles/s  ratio {rate / direct:.2f}"
        )
    ratio = runs[1][0] / runs[1][1] / direct
    verdict = "OK" if ratio >= SPEED_TARGET else "MISSED"
    print(
        f"  target: warm ratio >= {SPEED_TARGET}: {verdict}  (cold: the simulator computes "
        "every candle on the same two cores)"
    )
    return 0 if ok and ratio >= SPEED_TARGET else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--days", type=float, default=180.0)
    parser.add_argument("--symbols", default="BTCUSD,ETHUSD,SOLUSD,DOGE:USD")
    parser.add_argument(
        "--trade-probability",
        type=float,
        default=1.0,
        help="share of minutes with trades (1.0: 4 x 180 d is about 1M candles)",
    )
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> Any:
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(run())
