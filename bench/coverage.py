"""GET /coverage for a year of 1m candles with 1,000 holes, next to the row scan it avoids.

    .venv/bin/python bench/coverage.py                   # SQLite and PostgreSQL
    .venv/bin/python bench/coverage.py --backend sqlite  # one of them

One series, BTCUSD 1m, 525,600 minutes (a year) minus 1,000 holes of 5 minutes recorded as gaps
(open, failed, repaired and empty in turn) and 1,000 quiet minutes recorded as empty ranges; the
gap detector has checked all but the last hour. Generated in SQL, in a database of its own
(PostgreSQL: `md_bench_coverage`, dropped afterwards; SQLite: a temporary file).

Requests go through the ASGI app in-process (httpx.ASGITransport). The baselines run in the same
process, alternately with the requests: the row scan (`find_missing_ranges_many` over the whole
year: what drawing coverage from the candles would cost) and the four record reads /coverage is
built from. Target: /coverage p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import SeriesKey
from market_data.storage.sql import SqlStore, open_store
from market_data.timeframes import MINUTE_MS, align, format_ts, now_ms

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_NAME = "md_bench_coverage"
SERIES = SeriesKey("BTCUSD", "1m")
MINUTES = 525_600
HOLES = 1_000
BLOCK = MINUTES // (HOLES + 1)  # one hole and one quiet minute per block
HOLE_AT, HOLE_LEN, QUIET_AT = 100, 5, 300
TARGET_MS = 50.0

# Candles of every minute but the holes and the quiet ones: (i - first) % BLOCK decides.
_LAST_HOLE_MINUTE = HOLE_AT + HOLE_LEN - 1
_KEEP = (
    f"NOT (i / {BLOCK} < {HOLES} AND ((i % {BLOCK}) BETWEEN {HOLE_AT} AND {_LAST_HOLE_MINUTE}"
    f" OR (i % {BLOCK}) = {QUIET_AT}))"
)
PG_FILL = f"""
INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume, final)
SELECT 'bitfinex', 'BTCUSD', '1m', to_timestamp(($1::bigint + i::bigint * 60000) / 1000.0),
       100 + (i % 97) * 0.01, 101, 99, 100.5, 1 + (i % 7), true
FROM generate_series(0, {MINUTES - 1}) AS i WHERE {_KEEP}
"""
SQLITE_FILL = f"""
WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < {MINUTES - 1})
INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume, final)
SELECT 'bitfinex', 'BTCUSD', '1m', :first + i * 60000, 100 + (i % 97) * 0.01, 101, 99, 100.5,
       1 + (i % 7), 1
FROM m WHERE {_KEEP}
"""
STATUSES = ("open", "failed", "repaired", "empty")


async def fill(store: SqlStore, first: int) -> None:
    import sqlalchemy as sa

    began = time.perf_counter()
    if store.backend == "postgresql":
        conn = await asyncpg.connect(store.url.replace("+asyncpg", ""))
        try:
            await conn.execute(PG_FILL, first)
            await conn.execute("ANALYZE candles")
        finally:
            await conn.close()
    else:
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(SQLITE_FILL), {"first": first})
    stored = MINUTES - HOLES * (HOLE_LEN + 1)
    last = first + (MINUTES - 1) * MINUTE_MS
    async with store.engine.begin() as conn:
        from market_data.storage.tables import series_stats

        await conn.execute(
            series_stats.insert().values(
                exchange="bitfinex",
                symbol="BTCUSD",
                timeframe="1m",
                candle_count=stored,
                first_ts=first,
                last_ts=last,
                last_final_ts=last,
            )
        )
    holes = [
        (
            first + (k * BLOCK + HOLE_AT) * MINUTE_MS,
            first + (k * BLOCK + HOLE_AT + HOLE_LEN) * MINUTE_MS,
        )
        for k in range(HOLES)
    ]
    gaps = await store.create_gaps_many({SERIES: holes})
    for k, gap in enumerate(gaps):
        status = STATUSES[k % len(STATUSES)]
        if status == "failed":
            await store.record_gap_failure(gap.id, "bench", last, failed=True)
        elif status in ("repaired", "empty"):
            await store.close_gap(gap.id, status, 0, last)
    quiet = [
        (first + (k * BLOCK + QUIET_AT) * MINUTE_MS, first + (k * BLOCK + QUIET_AT + 1) * MINUTE_MS)
        for k in range(HOLES)
    ]
    await store.add_empty_ranges(SERIES, quiet)
    await store.set_scan_states({SERIES: (first, last - 60 * MINUTE_MS)})
    print(
        f"  filled {stored:,} candles, {HOLES} gaps, {HOLES} empty ranges "
        f"in {time.perf_counter() - began:.1f} s"
    )


async def paired(fns: dict[str, Callable[[], Awaitable[Any]]], n: int) -> dict[str, list[float]]:
    """Time every function in turn, n rounds, so other load hits them alike."""
    for fn in fns.values():
        await fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            began = time.perf_counter()
            await fn()
            samples[name].append((time.perf_counter() - began) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(backend: str, url: str, n: int) -> bool:
    store = open_store(url)
    await store.upgrade()
    first = align(now_ms(), "1m") - MINUTES * MINUTE_MS
    await fill(store, first)
    last = first + (MINUTES - 1) * MINUTE_MS
    settings = load_settings(
        env_file=None,
        database_url=url,
        bitfinex_symbols="BTCUSD",
        bitfinex_timeframes="1m",
        ws_ingestion_enabled=False,
    )
    daemon = Daemon(settings)
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    end = format_ts(last + MINUTE_MS)
    try:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            runs: list[int] = []

            async def coverage() -> None:
                response = await client.get(
                    "/coverage", params={"symbol": "BTCUSD", "timeframe": "1m", "end": end}
                )
                assert response.status_code == 200, response.text
                runs.append(len(response.json()["runs"]))

            async def row_scan() -> None:
                found = await store.find_missing_ranges_many([(SERIES, first, last, MINUTE_MS)])
                holes = found.get(SERIES, [])
                assert len(holes) == 2 * HOLES

            async def records() -> None:
                await store.coverage_records(SERIES, first, last + MINUTE_MS)

            samples = await paired(
                {
                    "/coverage": coverage,
                    "row scan (find_missing_ranges_many)": row_scan,
                    "record reads (coverage_records)": records,
                },
                n,
            )
    finally:
        await daemon.rest.aclose()
        await daemon.store.close()
        await store.close()
    print(f"  a year of 1m, {HOLES} holes: /coverage answers {runs[-1]} runs")
    print(f"  {'':34} {'p50 ms':>8} {'p95 ms':>8} {'mean':>8}  n")
    for name, values in samples.items():
        print(
            f"  {name:34} {pct(values, 0.5):8.2f} {pct(values, 0.95):8.2f} "
            f"{statistics.fmean(values):8.2f}  {len(values)}"
        )
    p50 = pct(samples["/coverage"], 0.5)
    scan = pct(samples["row scan (find_missing_ranges_many)"], 0.5)
    reads = pct(samples["record reads (coverage_records)"], 0.5)
    ok = p50 <= TARGET_MS
    print(
        f"  /coverage p50 {p50:.2f} ms (target <= {TARGET_MS:.0f} ms): "
        f"{'ok' if ok else 'MISSED'}; x{p50 / scan:.3f} of the row scan, "
        f"x{p50 / reads:.2f} of its record reads"
    )
    return ok


async def run(args: argparse.Namespace) -> int:
    ok = True
    if args.backend in ("sqlite", "both"):
        print(f"SQLite ({sys.platform})")
        with tempfile.TemporaryDirectory(prefix="md-bench-coverage-") as tmp:
            ok &= await bench("sqlite", f"sqlite:///{Path(tmp) / 'coverage.db'}", args.requests)
    if args.backend in ("postgres", "both"):
        print("PostgreSQL")
        admin = await asyncpg.connect(ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{PG_NAME}"')
            base = ADMIN.rsplit("/", 1)[0]
            ok &= await bench("postgres", f"{base}/{PG_NAME}", args.requests)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
            await admin.close()
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--requests", type=int, default=50)
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
