"""Export benchmark: stored candles to one Parquet file, next to raw baselines in the same run.

    .venv/bin/python bench/export.py                          # 10,000,000 candles, both engines
    .venv/bin/python bench/export.py --rows 1000000 --backend sqlite

For each backend, on a database of its own (a temporary SQLite file; a PostgreSQL database
`md_bench_export_<pid>`, dropped at the end), the candles are generated in SQL (10 series of
1m candles), then:
  export      export_targets(): keyset chunks -> Arrow -> Parquet row groups (what
              `market-data export --format parquet` runs, without the progress bar)
  raw read    the same rows read with the plain driver, nothing converted: stdlib sqlite3
              fetchmany / asyncpg binary COPY of each series into a byte count
  raw write   pyarrow writing the same number of rows to Parquet from arrays already in memory
              (one chunk's table written over and over)
Memory: the process's RSS when the first 1,000,000 rows are written and its peak over the
export (sampled at every chunk); flat means peak - RSS@1M stays under 64 MB.
Target: export >= 1,000,000 rows/s with flat memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np
import psutil
import pyarrow.parquet as pq

from market_data.export.exporter import export_targets
from market_data.export.files import Target
from market_data.export.formats import (
    PARQUET_COMPRESSION,
    PARQUET_DICTIONARY_COLUMNS,
    PARQUET_SCHEMA,
    to_table,
)
from market_data.export.options import Format
from market_data.models import SeriesKey
from market_data.storage.base import COLUMN_CHUNK_ROWS, CandleColumns
from market_data.storage.sql import open_store
from market_data.timeframes import MINUTE_MS

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = 1_600_000_020_000 - 1_600_000_020_000 % MINUTE_MS
SERIES = 10
TARGET_ROWS_PER_S = 1_000_000
FLAT_MB = 64
MB = 1024 * 1024


def series_keys() -> list[SeriesKey]:
    return [SeriesKey(f"S{s:02d}USD", "1m") for s in range(SERIES)]


def fill_sqlite(path: Path, per_series: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for key in series_keys():
            conn.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1),
                priced(i, p) AS (SELECT i, 100.0 + (abs(random()) % 100000) / 1000.0 FROM n)
                INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close,
                                     volume, final)
                SELECT 'bitfinex', ?, '1m', ? + i * 60000, p, p + 0.5, p - 0.5, p + 0.25,
                       1 + (i % 7) / 3.0, 1
                FROM priced
                """,
                (per_series, key.symbol, T0),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def fill_postgres(url: str, per_series: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE candles DROP CONSTRAINT IF EXISTS pk_candles")
        await conn.execute(
            """
            INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close,
                                 volume, final)
            SELECT 'bitfinex', 'S' || lpad(s::text, 2, '0') || 'USD', '1m',
                   to_timestamp(($1::bigint + i::bigint * 60000) / 1000.0),
                   p, p + 0.5, p - 0.5, p + 0.25, 1 + (i % 7) / 3.0, true
            FROM generate_series(0, $2::int - 1) AS s,
                 generate_series(0, $3::int - 1) AS i,
                 LATERAL (SELECT 100.0 + random() * 100 AS p) AS price
            """,
            T0,
            SERIES,
            per_series,
        )
        await conn.execute(
            "ALTER TABLE candles ADD CONSTRAINT pk_candles "
            "PRIMARY KEY (exchange, symbol, timeframe, ts)"
        )
        await conn.execute("VACUUM ANALYZE candles")
    finally:
        await conn.close()


async def raw_read_sqlite(path: Path, chunk_rows: int) -> int:
    conn = sqlite3.connect(path)
    rows = 0
    try:
        for key in series_keys():
            cursor = conn.execute(
                "SELECT ts, open, high, low, close, volume, final FROM candles WHERE exchange ="
                " 'bitfinex' AND symbol = ? AND timeframe = '1m' ORDER BY ts",
                (key.symbol,),
            )
            while batch := cursor.fetchmany(chunk_rows):
                rows += len(batch)
    finally:
        conn.close()
    return rows


async def raw_read_postgres(url: str, chunk_rows: int) -> int:
    conn = await asyncpg.connect(url)
    size = 0

    async def sink(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        for key in series_keys():
            await conn.copy_from_query(
                "SELECT ts, open, high, low, close, volume, final FROM candles WHERE exchange ="
                f" 'bitfinex' AND symbol = '{key.symbol}' AND timeframe = '1m' ORDER BY ts",
                output=sink,
                format="binary",
            )
    finally:
        await conn.close()
    return size


def raw_write(path: Path, rows: int, chunk_rows: int) -> float:
    """Seconds for pyarrow to write `rows` rows from a table already in memory."""
    rng = np.random.default_rng(7)
    prices = rng.uniform(100, 200, chunk_rows)
    chunk = CandleColumns(
        "S00USD",
        "1m",
        T0 + np.arange(chunk_rows, dtype=np.int64) * MINUTE_MS,
        prices,
        prices + 0.5,
        prices - 0.5,
        prices + 0.25,
        rng.uniform(0, 3, chunk_rows),
        np.ones(chunk_rows, dtype=np.bool_),
    )
    table = to_table(chunk)
    began = time.perf_counter()
    with pq.ParquetWriter(
        path,
        PARQUET_SCHEMA,
        compression=PARQUET_COMPRESSION,
        use_dictionary=PARQUET_DICTIONARY_COLUMNS,
    ) as writer:
        for _ in range(rows // chunk_rows):
            writer.write_table(table)
    return time.perf_counter() - began


class Memory:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.rows = 0
        self.at_1m: int | None = None
        self.peak = 0

    def sample(self, target: Target, key: SeriesKey, rows: int) -> None:
        rss = self.process.memory_info().rss
        self.rows += rows
        self.peak = max(self.peak, rss)
        if self.at_1m is None and self.rows >= 1_000_000:
            self.at_1m = rss


async def run(backend: str, rows: int, chunk_rows: int, folder: Path) -> bool:
    per_series = rows // SERIES
    dbname = f"md_bench_export_{os.getpid()}"
    if backend == "sqlite":
        db_path = folder / "bench.db"
        url = f"sqlite:///{db_path}"
    else:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await admin.close()
        url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{dbname}"
    try:
        store = open_store(url)
        await store.upgrade()
        began = time.perf_counter()
        if backend == "sqlite":
            await store.close()
            fill_sqlite(db_path, per_series)
            store = open_store(url)
        else:
            await fill_postgres(url, per_series)
        print(
            f"\n{backend}: {per_series * SERIES:,} candles in {SERIES} series generated in"
            f" {time.perf_counter() - began:.0f} s; chunks of {chunk_rows:,} rows"
        )
        out = folder / f"{backend}.parquet"
        memory = Memory()
        target = Target(str(out), tuple(series_keys()))
        try:
            began = time.perf_counter()
            [result] = await export_targets(
                store,
                [target],
                0,
                2**62,
                Format.parquet,
                chunk_rows=chunk_rows,
                on_chunk=memory.sample,
            )
            export_s = time.perf_counter() - began
        finally:
            await store.close()
        assert result.rows == per_series * SERIES, result
        assert pq.ParquetFile(out).metadata.num_rows == result.rows
        began = time.perf_counter()
        if backend == "sqlite":
            assert await raw_read_sqlite(db_path, chunk_rows) == result.rows
        else:
            await raw_read_postgres(url, chunk_rows)
        read_s = time.perf_counter() - began
        write_s = raw_write(folder / "raw.parquet", result.rows, chunk_rows)
    finally:
        if backend == "postgres":
            admin = await asyncpg.connect(ADMIN_URL)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            finally:
                await admin.close()
    n = result.rows
    rate = n / export_s
    read_label = "sqlite3 fetchmany" if backend == "sqlite" else "asyncpg binary COPY, bytes only"
    print(
        f"  export       {rate:>12,.0f} rows/s  ({export_s:.2f} s, "
        f"{out.stat().st_size / MB:.0f} MB Parquet)"
    )
    print(
        f"  raw read     {n / read_s:>12,.0f} rows/s  ({read_label}); export is"
        f" {rate / (n / read_s):.2f} x"
    )
    print(
        f"  raw write    {n / write_s:>12,.0f} rows/s  (pyarrow from memory); export is"
        f" {rate / (n / write_s):.2f} x"
    )
    at_1m = memory.at_1m or memory.peak
    growth = (memory.peak - at_1m) / MB
    print(
        f"  RSS at 1M rows {at_1m / MB:.0f} MB, peak {memory.peak / MB:.0f} MB"
        f" (+{growth:.0f} MB over {n / 1e6:.0f}M rows)"
    )
    fast, flat = rate >= TARGET_ROWS_PER_S, growth < FLAT_MB
    print(
        f"  target >= {TARGET_ROWS_PER_S:,} rows/s: {'PASS' if fast else 'FAIL'};"
        f" flat memory (< {FLAT_MB} MB growth): {'PASS' if flat else 'FAIL'}"
    )
    return fast and flat


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=["both", "sqlite", "postgres"], default="both")
    parser.add_argument("--chunk-rows", type=int, default=COLUMN_CHUNK_ROWS)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    folder = Path(tempfile.mkdtemp(prefix="md-bench-export-"))
    ok = True
    try:
        for backend in ["sqlite", "postgres"] if args.backend == "both" else [args.backend]:
            ok &= await run(backend, args.rows, args.chunk_rows, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
