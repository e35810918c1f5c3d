"""API latency at scale: /status and /candles (10,000 rows) next to the raw SQL they stand for.

    .venv/bin/python bench/api.py                 # 10,000,000 candles in PostgreSQL
    .venv/bin/python bench/api.py --rows 1000000  # a quicker run
    .venv/bin/python bench/api.py --keep          # keep the database; the next run reuses it
    .venv/bin/python bench/api.py --rows 1000000 --concurrent 300
        # 300 clients at once, one 10,000-row page each, /health polled meanwhile (api_load.py)

The candles are generated in SQL (generate_series, the primary key rebuilt after the load) in a
database of their own, `md_bench_api`, with `series_stats` filled to match (as the store keeps
it). Requests go through the ASGI app in-process (httpx.ASGITransport): routing, validation,
the store and serialization, without the TCP hop. The raw queries run on asyncpg, in the same
process and the same run. Targets: /status p50 <= 20 ms at any size; /candles <= 2x its query.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import SeriesKey
from market_data.storage.sql import open_store
from market_data.timeframes import MINUTE_MS, align

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BASE = "postgresql://postgres@127.0.0.1:5432"
PAGE = 10_000

RAW_STATS = """
SELECT symbol, timeframe, candle_count, first_ts, last_ts, last_final_ts
FROM series_stats WHERE exchange = 'bitfinex' ORDER BY symbol, timeframe
"""
RAW_OPEN_GAPS = """
SELECT symbol, timeframe, gap_start FROM data_gaps
WHERE exchange = 'bitfinex' AND repaired_at IS NULL ORDER BY gap_start DESC LIMIT 1000
"""
RAW_CANDLES = """
SELECT ts, open, high, low, close, volume, final FROM candles
WHERE exchange = 'bitfinex' AND symbol = $1 AND timeframe = '1m' AND ts >= $2 AND ts < $3
ORDER BY ts LIMIT 10000
"""


def symbol(i: int) -> str:
    return f"S{i:03d}USD"


async def prepare(name: str, rows: int, series: int) -> tuple[str, int]:
    """Create (or reuse) the database; returns its URL and the first candle's epoch ms."""
    per_series = rows // series
    first_ms = align(int(time.time() * 1000), "1m") - per_series * MINUTE_MS
    admin = await asyncpg.connect(ADMIN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{BASE}/{name}"
    store = open_store(url)
    await store.upgrade()
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        have = int(await conn.fetchval("SELECT coalesce(sum(candle_count), 0) FROM series_stats"))
        if have == per_series * series:
            first = await conn.fetchval(
                "SELECT (extract(epoch FROM min(first_ts)) * 1000)::bigint FROM series_stats"
            )
            print(f"reusing {name}: {have:,} candles")
            return url, int(first)
        began = time.perf_counter()
        await conn.execute("TRUNCATE candles, series_stats, data_gaps")
        await conn.execute("ALTER TABLE candles DROP CONSTRAINT IF EXISTS pk_candles")
        await conn.execute(
            """
            INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close,
                                 volume, final)
            SELECT 'bitfinex', 'S' || lpad(s::text, 3, '0') || 'USD', '1m',
                   to_timestamp(($1::bigint + i::bigint * 60000) / 1000.0),
                   p, p + 0.5, p - 0.5, p + 0.25, 1 + (i % 7), true
            FROM generate_series(0, $2::int - 1) AS s,
                 generate_series(0, $3::int - 1) AS i,
                 LATERAL (SELECT 100.0 + s + (i % 977) * 0.01 AS p) AS price
            """,
            first_ms,
            series,
            per_series,
        )
        loaded = time.perf_counter()
        await conn.execute(
            "ALTER TABLE candles ADD CONSTRAINT pk_candles "
            "PRIMARY KEY (exchange, symbol, timeframe, ts)"
        )
        last_ms = first_ms + (per_series - 1) * MINUTE_MS
        await conn.execute(
            """
            INSERT INTO series_stats (exchange, symbol, timeframe, candle_count, first_ts,
                                      last_ts, last_final_ts)
            SELECT 'bitfinex', 'S' || lpad(s::text, 3, '0') || 'USD', '1m', $1::bigint,
                   to_timestamp($2::bigint / 1000.0), to_timestamp($3::bigint / 1000.0),
                   to_timestamp($3::bigint / 1000.0)
            FROM generate_series(0, $4::int - 1) AS s
            """,
            per_series,
            first_ms,
            last_ms,
            series,
        )
        await conn.execute("VACUUM ANALYZE candles")
        print(
            f"filled {name}: {per_series * series:,} candles in {series} series "
            f"(load {loaded - began:.0f} s, key and vacuum {time.perf_counter() - loaded:.0f} s)"
        )
    finally:
        await conn.close()
    store = open_store(url)
    try:  # a few open gaps, as a live database has
        for i in range(0, series, 10):
            hole = (first_ms - 10 * MINUTE_MS, first_ms - 5 * MINUTE_MS)
            await store.create_gaps_many({SeriesKey(symbol(i), "1m"): [hole]})
    finally:
        await store.close()
    return url, first_ms


async def paired(
    api: Callable[[], Awaitable[Any]], raw: Callable[[], Awaitable[Any]], n: int
) -> tuple[list[float], list[float]]:
    """Time `api` and `raw` alternately, so load from anything else hits both alike."""
    for _ in range(3):
        await api()
        await raw()
    api_ms: list[float] = []
    raw_ms: list[float] = []
    for _ in range(n):
        for fn, samples in ((api, api_ms), (raw, raw_ms)):
            began = time.perf_counter()
            await fn()
            samples.append((time.perf_counter() - began) * 1000)
    return api_ms, raw_ms


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> int:
    url, first_ms = await prepare(args.database, args.rows, args.series)
    per_series = args.rows // args.series
    if args.concurrent:
        from api_load import load  # a sibling script

        try:
            return await load(url, first_ms, per_series, args.series, args.concurrent)
        finally:
            if not args.keep:
                admin = await asyncpg.connect(ADMIN)
                await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
                await admin.close()
    settings = load_settings(
        env_file=None,
        database_url=url,
        bitfinex_timeframes="1m",
        ws_ingestion_enabled=False,
        bitfinex_symbols=",".join(symbol(i) for i in range(args.series)),
    )
    daemon = Daemon(settings)
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    raw = await asyncpg.connect(url)
    rng = random.Random(7)
    span = max(1, per_series - PAGE)

    def window() -> tuple[str, int, int]:
        start = first_ms + rng.randrange(span) * MINUTE_MS
        return symbol(rng.randrange(args.series)), start, start + PAGE * MINUTE_MS

    try:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def status() -> None:
                response = await client.get("/status")
                assert response.status_code == 200, response.text
                assert len(response.json()["series"]) == args.series

            async def raw_status() -> None:
                await raw.fetch(RAW_STATS)
                await raw.fetch(RAW_OPEN_GAPS)

            async def candles() -> None:
                sym, start, end = window()
                response = await client.get(
                    "/candles",
                    params={
                        "symbol": sym,
                        "timeframe": "1m",
                        "start": str(start),
                        "end": str(end),
                        "limit": PAGE,
                    },
                )
                assert response.status_code == 200, response.text
                assert response.content.count(b'"ts"') == min(PAGE, per_series)

            async def raw_candles() -> None:
                sym, start, end = window()
                rows = await raw.fetch(
                    RAW_CANDLES,
                    sym,
                    datetime.fromtimestamp(start / 1000, UTC),
                    datetime.fromtimestamp(end / 1000, UTC),
                )
                assert len(rows) == min(PAGE, per_series)

            status_ms, raw_status_ms = await paired(status, raw_status, args.requests)
            candles_ms, raw_candles_ms = await paired(candles, raw_candles, args.requests // 2)
            results = {
                "/status": status_ms,
                "raw stats + open gaps": raw_status_ms,
                "/candles 10k rows": candles_ms,
                "raw candles 10k rows": raw_candles_ms,
            }
    finally:
        await raw.close()
        await daemon.rest.aclose()
        await daemon.store.close()
        if not args.keep:
            admin = await asyncpg.connect(ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            await admin.close()

    print(f"\n{args.rows:,} candles, {args.series} series (PostgreSQL, ASGI in-process)")
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'mean':>8}  n")
    for name, samples in results.items():
        print(
            f"{name:24} {pct(samples, 0.5):8.2f} {pct(samples, 0.99):8.2f} "
            f"{statistics.fmean(samples):8.2f}  {len(samples)}"
        )
    status_p50 = pct(results["/status"], 0.5)
    ratio50 = pct(results["/candles 10k rows"], 0.5) / pct(results["raw candles 10k rows"], 0.5)
    ratio99 = pct(results["/candles 10k rows"], 0.99) / pct(results["raw candles 10k rows"], 0.99)
    ok_status, ok_candles = status_p50 <= 20, ratio50 <= 2
    print(f"\n/status p50 {status_p50:.2f} ms (target <= 20 ms): {'ok' if ok_status else 'MISSED'}")
    print(
        f"/candles / raw query: p50 x{ratio50:.2f}, p99 x{ratio99:.2f} (target <= 2): "
        f"{'ok' if ok_candles else 'MISSED'}"
    )
    return 0 if ok_status and ok_candles else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database", default="md_bench_api")
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    parser.add_argument(
        "--concurrent",
        type=int,
        default=0,
        help="clients at once, each wanting one 10,000-row page (see api_load.py)",
    )
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
