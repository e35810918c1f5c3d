"""Gap detection and retention at scale: the service next to plain SQL, measured in the same run.

    .venv/bin/python bench/gaps.py                       # PostgreSQL, 1M and 10M candles
    .venv/bin/python bench/gaps.py --rows 1000000 --backend both

For each size: N candles (1m) in 100 series with 1,000 holes punched in, filled fast in SQL.

1. Full scan: `GapService.detect(full=True)` over every series, next to a plain window query
   (LAG over the same rows, per series, on the raw driver). Target: <= 1.2x the plain query.
2. Incremental cycle: 1,000 new candles (10 per series, one of them missing), then `detect()`.
   Target: <= 50 ms, the same at 1M and at 10M stored candles.
3. Retention deleting ~1,000,000 candles: total time and the longest single transaction
   (each batch is its own transaction; the longest is the longest the table is held).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event

from market_data.config import Settings, load_settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle
from market_data.rate_limiter import RateLimiter
from market_data.services.gap_repair import GapService
from market_data.services.retention import RetentionService
from market_data.services.sink import CandleSink
from market_data.storage.sql import SqlStore, open_store
from market_data.timeframes import DAY_MS, MINUTE_MS, align

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NO_RETENTION = {"1m": 0, "1h": 0, "4h": 0, "1d": 0}


def symbols(count: int) -> list[str]:
    return [f"B{i:03d}USD" for i in range(count)]


def plan_holes(series: int, per_series: int, holes: int, seed: int = 7) -> dict[int, list[int]]:
    """Per series index: the candle indexes to leave out (1-3 in a row, away from the ends)."""
    rng = random.Random(seed)
    plan: dict[int, list[int]] = {}
    for h in range(holes):
        s = h % series
        taken = set(plan.get(s, []))
        while True:
            start, length = rng.randrange(10, int(per_series * 0.9)), rng.randint(1, 3)
            span = set(range(start - 1, start + length + 1))
            if not span & taken:
                break
        plan.setdefault(s, []).extend(range(start, start + length))
    return plan


def expected_gaps(plan: dict[int, list[int]], first: int) -> set[tuple[str, int, int]]:
    names = symbols(max(plan) + 1)
    result = set()
    for s, idx in plan.items():
        ordered = sorted(idx)
        run_start = ordered[0]
        for prev, cur in zip(ordered, [*ordered[1:], -1], strict=True):
            if cur != prev + 1:
                hole = (first + run_start * MINUTE_MS, first + (prev + 1) * MINUTE_MS)
                result.add((names[s], *hole))
                run_start = cur
    return result


# -- filling ----------------------------------------------------------------------------------
async def fill_postgres(
    url: str, names: list[str], per_series: int, first: int, plan: dict[int, list[int]]
) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Load without the key, then build it once: far faster than 10M index insertions.
        await conn.execute("ALTER TABLE candles DROP CONSTRAINT pk_candles")
        await conn.execute(
            """
            INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume,
                                 final)
            SELECT 'bitfinex', ($1::text[])[s + 1], '1m',
                   to_timestamp(($2::bigint + i::bigint * 60000) / 1000.0),
                   100, 101, 99, 100.5, 1, true
            FROM generate_series(0, $3::int - 1) AS s, generate_series(0, $4::int - 1) AS i
            """,
            names,
            first,
            len(names),
            per_series,
        )
        holes = [(names[s], first + i * MINUTE_MS) for s, idx in plan.items() for i in idx]
        await conn.execute(
            """
            DELETE FROM candles c USING unnest($1::text[], $2::bigint[]) AS h(symbol, ms)
            WHERE c.exchange = 'bitfinex' AND c.timeframe = '1m' AND c.symbol = h.symbol
              AND c.ts = to_timestamp(h.ms / 1000.0)
            """,
            [h[0] for h in holes],
            [h[1] for h in holes],
        )
        await conn.execute(
            "ALTER TABLE candles ADD CONSTRAINT pk_candles "
            "PRIMARY KEY (exchange, symbol, timeframe, ts)"
        )
        await conn.execute(
            """
            INSERT INTO series_stats (exchange, symbol, timeframe, candle_count, first_ts, last_ts,
                                      last_final_ts)
            SELECT exchange, symbol, timeframe, count(*), min(ts), max(ts), max(ts)
            FROM candles GROUP BY exchange, symbol, timeframe
            """
        )
        await conn.execute("VACUUM ANALYZE candles")
    finally:
        await conn.close()


def fill_sqlite(
    path: str, names: list[str], per_series: int, first: int, plan: dict[int, list[int]]
) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA synchronous=OFF")
        for s, name in enumerate(names):
            skip = set(plan.get(s, []))
            rows = ((name, first + i * MINUTE_MS) for i in range(per_series) if i not in skip)
            db.executemany(
                "INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, "
                "volume, final) VALUES ('bitfinex', ?, '1m', ?, 100, 101, 99, 100.5, 1, 1)",
                rows,
            )
            db.commit()
        db.execute(
            "INSERT INTO series_stats (exchange, symbol, timeframe, candle_count, first_ts, "
            "last_ts, last_final_ts) SELECT exchange, symbol, timeframe, count(*), min(ts), "
            "max(ts), max(ts) FROM candles GROUP BY exchange, symbol, timeframe"
        )
        db.commit()
        db.execute("ANALYZE")
    finally:
        db.close()


# -- the plain-SQL baseline -------------------------------------------------------------------
async def baseline_postgres(url: str, names: list[str]) -> tuple[float, int]:
    conn = await asyncpg.connect(url)
    try:
        started, found = time.perf_counter(), 0
        for name in names:
            rows = await conn.fetch(
                """
                SELECT prev, ts FROM (
                    SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev FROM candles
                    WHERE exchange = 'bitfinex' AND symbol = $1 AND timeframe = '1m') w
                WHERE ts - prev > interval '1 minute'
                """,
                name,
            )
            found += len(rows)
        return time.perf_counter() - started, found
    finally:
        await conn.close()


def baseline_sqlite(path: str, names: list[str]) -> tuple[float, int]:
    db = sqlite3.connect(path)
    try:
        started, found = time.perf_counter(), 0
        for name in names:
            found += len(
                db.execute(
                    "SELECT prev, ts FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev "
                    "FROM candles "
                    "WHERE exchange = 'bitfinex' AND symbol = ? AND timeframe = '1m') "
                    "WHERE ts - prev > 60000",
                    (name,),
                ).fetchall()
            )
        return time.perf_counter() - started, found
    finally:
        db.close()


# -- measuring transactions -------------------------------------------------------------------
class TransactionTimer:
    """Times every transaction the store's engine opens (begin to commit or rollback)."""

    def __init__(self, store: SqlStore) -> None:
        self.durations: list[float] = []
        engine = store.engine.sync_engine
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, conn: Any) -> None:
        conn.info["bench_began"] = time.perf_counter()

    def _end(self, conn: Any) -> None:
        began = conn.info.pop("bench_began", None)
        if began is not None:
            self.durations.append(time.perf_counter() - began)


_CALLS: dict[str, list[float]] = {}


def profile_store(store: SqlStore) -> None:
    """Time every store method called during the incremental cycles (--profile)."""
    for name in dir(store):
        fn = getattr(store, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(fn):
            continue

        def timed(fn: Any = fn, name: str = name) -> Any:
            async def run(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    _CALLS.setdefault(name, []).append(time.perf_counter() - t0)

            return run

        setattr(store, name, timed())


def report_profile() -> None:
    for name, times in sorted(_CALLS.items(), key=lambda kv: -sum(kv[1])):
        print(f"    {name:28} {len(times):5} calls {sum(times) * 1000:8.1f} ms")
    _CALLS.clear()


# -- one size, one backend --------------------------------------------------------------------
def settings_for(url: str, names: list[str], retention_days: float = 0) -> Settings:
    return load_settings(
        env_file=None,
        database_url=url,
        bitfinex_symbols=",".join(names),
        bitfinex_timeframes="1m",
        retention_days={**NO_RETENTION, "1m": retention_days},
    )


def service(settings: Settings, store: SqlStore, clock: list[int]) -> GapService:
    rest = BitfinexRest("http://127.0.0.1:9", RateLimiter.from_settings(settings))  # never asked
    exchange = BitfinexExchange(rest, settings.bitfinex_ws_url)
    return GapService(
        settings, store, exchange, CandleSink(store, settings), clock=lambda: clock[0]
    )


async def run_size(backend: str, rows: int, args: argparse.Namespace) -> dict[str, float]:
    names = symbols(args.series)
    per_series = rows // args.series
    now = align(int(time.time() * 1000), "1m")
    first = now - (per_series + 1) * MINUTE_MS  # the newest candle closed a minute ago
    plan = plan_holes(args.series, per_series, args.holes)
    url, cleanup = await make_database(backend)
    out: dict[str, float] = {}
    try:
        store = open_store(url)
        await store.upgrade()
        t0 = time.perf_counter()
        if backend == "postgres":
            await store.close()
            await fill_postgres(url, names, per_series, first, plan)
            store = open_store(url)
        else:
            await store.close()
            await asyncio.to_thread(
                fill_sqlite, url.removeprefix("sqlite:///"), names, per_series, first, plan
            )
            store = open_store(url)
        stored = sum(s.candle_count for s in await store.series_stats())
        print(f"[{backend} {stored:,} candles] filled in {time.perf_counter() - t0:.1f} s")

        # 1. full scan next to the plain window query
        base_times = []
        for _ in range(args.repeat):
            if backend == "postgres":
                seconds, found = await baseline_postgres(url, names)
            else:
                seconds, found = await asyncio.to_thread(
                    baseline_sqlite, url.removeprefix("sqlite:///"), names
                )
            base_times.append(seconds)
        clock = [now]
        settings = settings_for(url, names)
        gaps = service(settings, store, clock)
        full_times, detected = [], 0
        for _ in range(args.repeat):
            report = await gaps.detect(full=True)
            detected += len(report.new_gaps)
            full_times.append(report.seconds)
        recorded = {(g.symbol, g.gap_start, g.gap_end) for g in await store.list_gaps(limit=10_000)}
        assert recorded == expected_gaps(plan, first), "detected gaps differ from the holes"
        assert detected == found == len(recorded), (detected, found, len(recorded))
        base, full = statistics.median(base_times), statistics.median(full_times)
        out.update(full_scan_s=full, window_query_s=base, ratio=full / base)
        print(
            f"  full scan: service {full:.3f} s (first run, recording {detected} gaps: "
            f"{full_times[0]:.3f} s), plain LAG query {base:.3f} s -> ratio {full / base:.2f} "
            f"(target <= 1.2)"
        )

        # 2. incremental cycles: 1,000 new candles each (10 per series, one missing in one series)
        if args.profile:
            profile_store(store)
        cycle_times = []
        next_ts = first + per_series * MINUTE_MS
        for cycle in range(args.cycles):
            batch = [
                Candle(name, "1m", next_ts + i * MINUTE_MS, 100, 101, 99, 100.5, 1)
                for s, name in enumerate(names)
                for i in range(10)
                if not (s == cycle % len(names) and i == 4)
            ]
            await store.upsert_candles(batch)
            next_ts += 10 * MINUTE_MS
            clock[0] = next_ts
            report = await gaps.detect()
            assert len(report.new_gaps) == 1, report
            cycle_times.append(report.seconds)
        restarted = service(settings, store, clock)
        await store.upsert_candles(
            [Candle(n, "1m", next_ts, 100, 101, 99, 100.5, 1) for n in names]
        )
        clock[0] = next_ts + MINUTE_MS
        restart_s = (await restarted.detect()).seconds
        if args.profile:
            report_profile()
        inc = statistics.median(cycle_times)
        out.update(incremental_ms=inc * 1000, incremental_max_ms=max(cycle_times) * 1000)
        print(
            f"  incremental cycle (1,000 new candles): median {inc * 1000:.1f} ms, "
            f"max {max(cycle_times) * 1000:.1f} ms over {len(cycle_times)} cycles; "
            f"first cycle after a restart {restart_s * 1000:.1f} ms (target <= 50 ms)"
        )

        # 3. retention: --delete-rows candles (at most half of them)
        per_series_delete = min(args.delete_rows // args.series, per_series // 2)
        cutoff = first + per_series_delete * MINUTE_MS
        retention_days = (clock[0] - cutoff) / DAY_MS
        retention = RetentionService(
            settings_for(url, names, retention_days), store, clock=lambda: clock[0]
        )
        timer = TransactionTimer(store)
        t0 = time.perf_counter()
        deleted = await retention.run_once()
        total = time.perf_counter() - t0
        longest = max(timer.durations)
        out.update(retention_deleted=deleted, retention_s=total, longest_txn_ms=longest * 1000)
        print(
            f"  retention: deleted {deleted:,} candles in {total:.2f} s "
            f"({deleted / total:,.0f} rows/s); {len(timer.durations)} transactions, the longest "
            f"{longest * 1000:.1f} ms"
        )
        await store.close()
    finally:
        await cleanup()
    return out


async def make_database(backend: str) -> tuple[str, Any]:
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="bench-gaps-")
        path = Path(folder) / "bench.db"

        async def drop_file() -> None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
            with contextlib.suppress(OSError):
                Path(folder).rmdir()

        return f"sqlite:///{path}", drop_file
    name = f"md_bench_gaps_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return f"{ADMIN_URL.rpartition('/')[0]}/{name}", drop


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        default="1000000,10000000",
        help="stored candles, comma-separated sizes (default 1M and 10M)",
    )
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--holes", type=int, default=1000)
    parser.add_argument("--delete-rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument("--repeat", type=int, default=3, help="full-scan repetitions")
    parser.add_argument("--cycles", type=int, default=5, help="incremental cycles")
    parser.add_argument("--profile", action="store_true", help="time each store call")
    args = parser.parse_args()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results = {}
    for backend in backends:
        for rows in (int(r) for r in args.rows.split(",")):
            results[(backend, rows)] = await run_size(backend, rows, args)
    print("\nsummary")
    for (backend, rows), r in results.items():
        print(
            f"  {backend:8} {rows:>11,}: full/plain {r['ratio']:.2f} (target 1.2), "
            f"incremental {r['incremental_ms']:.1f} ms (target 50), retention "
            f"{r['retention_deleted']:,.0f} rows {r['retention_s']:.1f} s, "
            f"longest txn {r['longest_txn_ms']:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
