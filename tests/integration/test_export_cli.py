"""`market-data export` in a subprocess on SQLite and PostgreSQL: CSV and Parquet files read back
by csv, pandas, polars and DuckDB; file layouts; exit code 2 with one line on bad usage."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from market_data.models import Candle, SeriesKey
from market_data.storage.sql import open_store
from market_data.timeframes import HOUR_MS, MINUTE_MS, align

T0 = align(1_767_225_600_000, "1d")  # 2026-01-01T00:00:00Z
BTC_1M = SeriesKey("BTCUSD", "1m")
ETH_1M = SeriesKey("ETHUSD", "1m")
BTC_1H = SeriesKey("BTCUSD", "1h")
COLUMNS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]


def _candles(series: SeriesKey, count: int, step: int, base: float) -> list[Candle]:
    return [
        Candle(
            series.symbol,
            series.timeframe,
            T0 + i * step,
            base + i / 3,
            base + i + 0.1 + 0.2,
            base - 1 / 7,
            base + i / 3,
            (i * 0.1) % 5,
        )
        for i in range(count)
    ]


DATA = {
    BTC_1M: _candles(BTC_1M, 250, MINUTE_MS, 100.0),
    ETH_1M: _candles(ETH_1M, 40, MINUTE_MS, 10.0),
    BTC_1H: _candles(BTC_1H, 30, HOUR_MS, 1000.0),
}


async def _fill(url: str) -> None:
    store = open_store(url)
    try:
        for rows in DATA.values():
            await store.upsert_candles(rows)
    finally:
        await store.close()


async def _fill_more(url: str, series: SeriesKey, count: int) -> None:
    store = open_store(url)
    try:
        await store.upsert_candles(_candles(series, count, MINUTE_MS, 5.0))
    finally:
        await store.close()


@pytest.fixture
def filled(database_url: str) -> str:
    asyncio.run(_fill(database_url))
    return database_url


def export(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BITFINEX_", "LOG_"))
    }
    env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "market_data", "--env-file", "", "export", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _expected(*series: SeriesKey) -> list[tuple[str, str, int, float, float, float, float, float]]:
    return [
        (c.symbol, c.timeframe, c.ts, c.open, c.high, c.low, c.close, c.volume)
        for key in series
        for c in DATA[key]
    ]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_csv_one_file_several_series_exact(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    done = export(
        filled,
        tmp_path,
        "-s",
        "BTCUSD",
        "-s",
        "eth:usd",
        "-t",
        "1m",
        "-t",
        "1H",
        "--format",
        "csv",
        "-o",
        str(out),
        "--chunk-rows",
        "33",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == COLUMNS
    # ETHUSD/1h holds nothing: named, not an error. Series by symbol, then timeframe order.
    assert "nothing stored for ETHUSD/1h" in done.stderr
    want = _expected(BTC_1M, BTC_1H, ETH_1M)
    assert [(r[0], r[1], r[2], *map(float, r[3:])) for r in rows[1:]] == [
        (s, t, _iso(ts), *v) for s, t, ts, *v in want
    ]
    assert not list(tmp_path.glob("*.part"))


async def test_csv_epoch_ms_range_and_stdout(filled: str, tmp_path: Path) -> None:
    start, end = T0 + 10 * MINUTE_MS, T0 + 20 * MINUTE_MS
    done = export(
        filled,
        tmp_path,
        "-s",
        "BTCUSD",
        "-t",
        "1m",
        "-o",
        "-",
        "--timestamps",
        "ms",
        "--start",
        _iso(start),
        "--end",
        str(end),
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == COLUMNS
    assert [int(r[2]) for r in rows[1:]] == list(range(start, end, MINUTE_MS))


async def test_parquet_reads_into_pandas_polars_and_duckdb(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "candles.parquet"
    done = export(filled, tmp_path, "-s", "all", "-t", "1m", "-o", str(out), "--chunk-rows", "64")
    assert done.returncode == 0, done.stderr
    want = _expected(BTC_1M, ETH_1M)
    want_utc = [(s, t, datetime.fromtimestamp(ts / 1000, UTC), *v) for s, t, ts, *v in want]

    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(out)
    assert list(frame.columns) == COLUMNS
    assert str(frame["ts"].dtype) == "datetime64[ms, UTC]"
    assert [
        (r[0], r[1], r[2].to_pydatetime(), *r[3:]) for r in frame.itertuples(index=False)
    ] == want_utc

    pl = pytest.importorskip("polars")
    table = pl.read_parquet(out)
    assert str(table.schema["ts"]) == "Datetime(time_unit='ms', time_zone='UTC')"
    assert table.rows() == want_utc

    duckdb = pytest.importorskip("duckdb")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        kinds = con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()
        assert {name: kind for name, kind, *_ in kinds}["ts"] == "TIMESTAMP WITH TIME ZONE"
        got = con.execute(
            f"SELECT symbol, timeframe, epoch_ms(ts), open, high, low, close, volume "
            f"FROM '{out}' ORDER BY symbol, ts"
        ).fetchall()
    assert got == want


async def test_a_file_per_series_pattern_and_directory(filled: str, tmp_path: Path) -> None:
    done = export(
        filled,
        tmp_path,
        "-s",
        "all",
        "-t",
        "all",
        "-o",
        str(tmp_path / "by" / "{symbol}-{timeframe}.parquet"),
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "by").iterdir())
    assert names == ["BTCUSD-1h.parquet", "BTCUSD-1m.parquet", "ETHUSD-1m.parquet"]
    per_tf = export(filled, tmp_path, "-s", "all", "-t", "all", "-o", "tf/{timeframe}.csv")
    assert per_tf.returncode == 0, per_tf.stderr
    one_minute = list(csv.reader((tmp_path / "tf" / "1m.csv").open()))
    assert len(one_minute) == 1 + 250 + 40
    (tmp_path / "dir").mkdir()
    into_dir = export(filled, tmp_path, "-s", "BTCUSD", "-t", "1h", "-o", "dir", "-f", "csv")
    assert into_dir.returncode == 0, into_dir.stderr
    assert len(list(csv.reader((tmp_path / "dir" / "BTCUSD_1h.csv").open()))) == 31


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_usage_is_exit_2_with_one_line(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_fill(database_url))
    (tmp_path / "BTCUSD").mkdir()
    cases = [
        (["-s", "BTCUSD", "-t", "7m", "-o", "x.csv"], "unknown timeframe"),
        (["-s", "BTC/USD", "-t", "1m", "-o", "x.csv"], "BTC/USD"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "x.csv", "--start", "yesterday"], "not a date"),
        (
            [
                "-s",
                "BTCUSD",
                "-t",
                "1m",
                "-o",
                "x.csv",
                "--start",
                "2026-02-01",
                "--end",
                "2026-01-01",
            ],
            "before --end",
        ),
        (["-s", "BTCUSD", "-t", "1m", "-o", "x.txt"], "--format"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "x.csv", "-f", "xlsx"], "csv or parquet"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "-", "-f", "parquet"], "standard output"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "x.parquet", "--timestamps", "ms"], "CSV"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "x.csv", "--timestamps", "s"], "iso or ms"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "{symbol}", "-f", "csv"], "is a directory"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "out/{symbol}/", "-f", "csv"], "is a directory"),
        (["-s", "BTCUSD", "-t", "1m", "-o", "/proc/nope/x.csv"], "cannot"),
    ]
    for args, needle in cases:
        done = export(database_url, tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert needle in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr
    written = [p.name for p in tmp_path.iterdir() if not p.name.startswith("market_data.db")]
    assert written == ["BTCUSD"]  # nothing was written


def test_unreachable_database_is_exit_1_and_leaves_no_file(tmp_path: Path) -> None:
    done = export(
        "postgresql://md:secret-pw@127.0.0.1:1/none",
        tmp_path,
        "-s",
        "BTCUSD",
        "-t",
        "1m",
        "-o",
        "x.csv",
    )
    assert done.returncode == 1, done.stderr
    assert "secret-pw" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_ctrl_c_exits_130_and_leaves_no_file(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_fill(database_url))
    asyncio.run(_fill_more(database_url, SeriesKey("SOLUSD", "1m"), 5000))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BITFINEX_", "LOG_"))
    }
    env["DATABASE_URL"] = database_url
    out = tmp_path / "slow.csv"
    # One row per query: slow enough to be interrupted midway.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "market_data",
            "--env-file",
            "",
            "export",
            "-s",
            "all",
            "-t",
            "all",
            "-o",
            str(out),
            "--chunk-rows",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    partial = tmp_path / "slow.csv.part"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists()
    assert not partial.exists()
