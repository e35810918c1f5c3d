"""Storage benchmark: the store's write paths next to raw-driver baselines, in the same run.

    .venv/bin/python bench/storage.py [--rows 1000000] [--backend both|sqlite|postgres]

For each backend, on its own temporary database (dropped at the end):
  baseline    PostgreSQL: asyncpg binary COPY into the empty candles table, no conflict handling
              SQLite: stdlib sqlite3 executemany plain INSERT (WAL, synchronous=NORMAL)
  bulk/empty  store.upsert_candles(all rows) into an empty table
  bulk/pages  the same, as 10,000-row pages (what a backfill does)
  bulk/half   all rows into a table already holding the older half of every series
  bulk/every2 all rows into a table already holding every other row (every chunk conflicts)
  flush       200 flushes of 200 rows, half of them conflicting (changed values): p50, p99
Targets: PostgreSQL bulk >= 0.4 x COPY, SQLite bulk >= 0.7 x stdlib, flush p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

from market_data.models import Candle
from market_data.storage.dialect_time import ms_to_datetime
from market_data.storage.sql import SqlStore, open_store

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
M = 60_000
T0 = 1_600_000_020_000 - 1_600_000_020_000 % M
SERIES = 10
PAGE = 10_000
FLUSHES = 200
FLUSH_ROWS = 200
TARGETS = {"postgres": 0.4, "sqlite": 0.7}
FLUSH_P99_TARGET_MS = 20.0


def make_candles(rows: int) -> list[Candle]:
    rng = random.Random(7)
    per_series = rows // SERIES
    out: list[Candle] = []
    for s in range(SERIES):
        price = 100.0 + s
        for i in range(per_series):
            price = max(1.0, price + rng.uniform(-1, 1))
            out.append(
                Candle(
                    f"S{s:02d}USD",
                    "1m",
                    T0 + i * M,
                    price,
                    price + 1.0,
                    price - 1.0,
                    price + 0.5,
                    rng.uniform(0, 50),
                )
            )
    return out


def rows_per_s(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def upsert_all(store: SqlStore, rows: Sequence[Candle], page: int | None = None) -> None:
    if page is None:
        await store.upsert_candles(rows)
        return
    for i in range(0, len(rows), page):
        await store.upsert_candles(rows[i : i + page])


def flush_batches(rows: Sequence[Candle], count: int = FLUSHES) -> list[list[Candle]]:
    """Each flush: 100 stored keys with changed values (each key changed once) and 100 new
    keys past the series' end."""
    rng = random.Random(11)
    per_series = len(rows) // SERIES
    half = FLUSH_ROWS // 2
    rounds = -(-count // SERIES)
    picks = {
        s: rng.sample(range(per_series), min(per_series, rounds * half)) for s in range(SERIES)
    }
    batches = []
    for k in range(count):
        s, r = k % SERIES, k // SERIES
        series = rows[s * per_series : (s + 1) * per_series]
        changed = [
            Candle(c.symbol, c.timeframe, c.ts, c.open, c.high + 1, c.low, c.close, c.volume + 1)
            for c in (series[i] for i in picks[s][r * half : (r + 1) * half])
        ]
        base = T0 + (per_series + r * half) * M
        new = [
            Candle(series[0].symbol, "1m", base + i * M, 5.0, 6.0, 4.0, 5.5, 1.0)
            for i in range(FLUSH_ROWS - len(changed))
        ]
        batches.append(changed + new)
    return batches


async def flush_latencies(store: SqlStore, batches: list[list[Candle]]) -> tuple[float, float]:
    times = []
    for batch in batches:
        started = time.perf_counter()
        result = await store.upsert_candles(batch)
        times.append((time.perf_counter() - started) * 1000)
        assert result.written == len(batch), result.written
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


class Target:
    """A backend under test: fresh empty migrated databases and a raw-driver baseline."""

    name: str
    label: str

    async def fresh_url(self) -> str:
        raise NotImplementedError

    async def baseline(self, url: str, rows: list[Candle]) -> float:
        """Seconds to load `rows` into the empty candles table at `url` the plain way."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        raise NotImplementedError


class Postgres(Target):
    name, label = "postgres", "asyncpg binary COPY"

    def __init__(self) -> None:
        self.made: list[str] = []

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def sweep(self) -> None:
        """Drop databases left by benchmark runs that were killed (their names carry the pid)."""
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname ~ '^md_bench_[0-9]+_[0-9a-f]+$'"
            )
        finally:
            await conn.close()
        for (name,) in names:
            pid = int(name.split("_")[2])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except PermissionError:
                pass

    async def fresh_url(self) -> str:
        if not self.made:
            await self.sweep()
        name = f"md_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    async def baseline(self, url: str, rows: list[Candle]) -> float:
        records = [
            (
                "bitfinex",
                c.symbol,
                c.timeframe,
                ms_to_datetime(c.ts),
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.final,
            )
            for c in rows
        ]
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            return await timed(lambda: conn.copy_records_to_table("candles", records=records))
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        for name in self.made:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Sqlite(Target):
    name, label = "sqlite", "sqlite3 executemany plain INSERT"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="md-bench-"))
        self.count = 0

    async def fresh_url(self) -> str:
        self.count += 1
        return f"sqlite:///{self.folder / f'bench-{self.count}.db'}"

    async def baseline(self, url: str, rows: list[Candle]) -> float:
        tuples = [
            (
                "bitfinex",
                c.symbol,
                c.timeframe,
                c.ts,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.final,
            )
            for c in rows
        ]
        conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            started = time.perf_counter()
            for i in range(0, len(tuples), 5_000):
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low,"
                    " close, volume, final) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    tuples[i : i + 5_000],
                )
                conn.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            conn.close()

    async def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


async def migrated(target: Target) -> SqlStore:
    store = open_store(await target.fresh_url())
    await store.upgrade()
    return store


async def run(target: Target, rows: list[Candle], repeat: int) -> dict[str, list[float]]:
    """Rates in rows/s (and flush latencies in ms), `repeat` times for the headline pair."""
    n = len(rows)
    out: dict[str, list[float]] = {}
    for _ in range(repeat):  # interleaved, so both sides see the same machine
        store = await migrated(target)
        url = store.url
        await store.close()
        out.setdefault("baseline", []).append(rows_per_s(n, await target.baseline(url, rows)))
        store = await migrated(target)
        try:
            seconds = await timed(lambda s=store: upsert_all(s, rows))  # type: ignore[misc]
            out.setdefault("bulk/empty", []).append(rows_per_s(n, seconds))
            assert sum(x.candle_count for x in await store.series_stats()) == n
            await store.checkpoint()
            p50, p99 = await flush_latencies(store, flush_batches(rows))
            out.setdefault("flush p50 ms", []).append(p50)
            out.setdefault("flush p99 ms", []).append(p99)
        finally:
            await store.close()
    half = {c.ts for c in rows[: n // SERIES // 2]}  # the older half of each series
    for name, preload, page in [
        ("bulk/pages", [], PAGE),
        ("bulk/half", [c for c in rows if c.ts in half], None),
        ("bulk/every2", rows[::2], None),
    ]:
        store = await migrated(target)
        try:
            if preload:
                await store.upsert_candles(preload)
                await store.checkpoint()
            seconds = await timed(lambda s=store, p=page: upsert_all(s, rows, p))  # type: ignore[misc]
            out[name] = [rows_per_s(n, seconds)]
            assert sum(x.candle_count for x in await store.series_stats()) == n
        finally:
            await store.close()
    return out


def report(target: Target, results: dict[str, list[float]]) -> bool:
    base = max(results["baseline"])
    runs = len(results["baseline"])
    print(
        f"\n{target.name}: baseline ({target.label}) {base:,.0f} rows/s, best of {runs}"
        f" (all: {', '.join(f'{x:,.0f}' for x in results['baseline'])})"
    )
    for name in ("bulk/empty", "bulk/pages", "bulk/half", "bulk/every2"):
        rate = max(results[name])
        print(f"  {name:<12} {rate:>10,.0f} rows/s  {rate / base:5.2f} x baseline")
    best = min(range(runs), key=lambda i: results["flush p99 ms"][i])
    p50, p99 = results["flush p50 ms"][best], results["flush p99 ms"][best]
    all_p99 = ", ".join(f"{x:.2f}" for x in results["flush p99 ms"])
    print(
        f"  flush, {FLUSHES} x {FLUSH_ROWS} rows, 50% conflicts: p50 {p50:.2f} ms,"
        f" p99 {p99:.2f} ms (p99 of each run: {all_p99})"
    )
    ratio = max(results["bulk/empty"]) / base
    bulk_ok, flush_ok = ratio >= TARGETS[target.name], p99 <= FLUSH_P99_TARGET_MS
    print(
        f"  target bulk/empty >= {TARGETS[target.name]} x baseline:"
        f" {'PASS' if bulk_ok else 'FAIL'} ({ratio:.2f})"
    )
    print(f"  target flush p99 <= {FLUSH_P99_TARGET_MS:.0f} ms: {'PASS' if flush_ok else 'FAIL'}")
    return bulk_ok and flush_ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["both", "sqlite", "postgres"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="runs of baseline and bulk/empty")
    args = parser.parse_args()
    rows = make_candles(args.rows)
    print(
        f"{len(rows):,} candles in {SERIES} series; {os.cpu_count()} CPUs;"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    ok = True
    chosen = {"both": [Sqlite, Postgres], "sqlite": [Sqlite], "postgres": [Postgres]}
    for make in chosen[args.backend]:
        target = make()
        try:
            ok &= report(target, await run(target, rows, args.repeat))
        finally:
            await target.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
