"""Pure parts of the export: output planning, row estimates, CSV and Arrow encoding."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from market_data.export.exporter import estimate_rows
from market_data.export.files import OutputError, Target, check_writable, plan_targets
from market_data.export.formats import CsvEncoder, to_table
from market_data.export.options import Timestamps
from market_data.models import SeriesKey, SeriesStats
from market_data.storage.base import CandleColumns
from market_data.timeframes import HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEYS = [SeriesKey("BTCUSD", "1m"), SeriesKey("BTCUSD", "1h"), SeriesKey("ETHUSD", "1m")]


def test_plan_one_file_pattern_directory_and_stdout(tmp_path: Path) -> None:
    assert plan_targets("all.csv", KEYS, "csv") == [Target("all.csv", tuple(KEYS))]
    assert plan_targets("-", KEYS, "csv") == [Target("-", tuple(KEYS))]
    per_series = plan_targets("o/{symbol}_{timeframe}.parquet", KEYS, "parquet")
    assert [t.path for t in per_series] == [
        "o/BTCUSD_1m.parquet",
        "o/BTCUSD_1h.parquet",
        "o/ETHUSD_1m.parquet",
    ]
    per_tf = plan_targets("{timeframe}.csv", KEYS, "csv")
    assert per_tf == [Target("1m.csv", (KEYS[0], KEYS[2])), Target("1h.csv", (KEYS[1],))]
    folder = plan_targets(str(tmp_path), KEYS[:1], "csv")
    assert folder == [Target(str(tmp_path / "BTCUSD_1m.csv"), (KEYS[0],))]
    assert plan_targets("new/", KEYS[:1], "parquet")[0].path == "new/BTCUSD_1m.parquet"
    with pytest.raises(OutputError):
        plan_targets(" ", KEYS, "csv")


def test_check_writable_creates_folders_and_refuses_directories(tmp_path: Path) -> None:
    check_writable([Target(str(tmp_path / "a" / "b" / "x.csv"), ())])
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe is gone
    with pytest.raises(OutputError, match="is a directory"):
        check_writable([Target(str(tmp_path / "a"), ())])
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot"):
        check_writable([Target(str(tmp_path / "file" / "x.csv"), ())])


def test_estimate_rows_from_stats() -> None:
    stats = SeriesStats("BTCUSD", "1h", 100, T0, T0 + 99 * HOUR_MS, T0 + 99 * HOUR_MS)
    assert estimate_rows(stats, 0, 2**62) == 100
    assert estimate_rows(stats, T0 + 10 * HOUR_MS, T0 + 20 * HOUR_MS) == 10
    assert estimate_rows(stats, 0, T0) == 0
    assert estimate_rows(None, 0, 2**62) == 0
    sparse = SeriesStats("BTCUSD", "1h", 10, T0, T0 + 99 * HOUR_MS, None)  # gaps: fewer rows
    assert estimate_rows(sparse, T0, T0 + 50 * HOUR_MS) <= 10


def _columns(n: int, start: int = T0) -> CandleColumns:
    prices = np.array([0.1 + 0.2, 1 / 3, 1e-300, 123456789.12345678, 5.0][:n], dtype=np.float64)
    return CandleColumns(
        "BTCUSD",
        "1m",
        start + np.arange(n, dtype=np.int64) * MINUTE_MS,
        prices,
        prices * 2,
        prices / 2,
        prices,
        prices * 3,
        np.ones(n, dtype=np.bool_),
    )


def test_csv_is_exact_iso_or_epoch_ms() -> None:
    cols = _columns(5)
    encoder = CsvEncoder()
    rows = list(csv.reader(io.StringIO((encoder.header() + encoder.encode(cols)).decode())))
    assert rows[0] == ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    assert [r[2] for r in rows[1:3]] == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"]
    assert [float(r[3]) for r in rows[1:]] == cols.open.tolist()  # shortest exact text
    assert [float(r[7]) for r in rows[1:]] == cols.volume.tolist()
    ms = CsvEncoder(Timestamps.ms).encode(cols).decode().splitlines()
    assert [int(line.split(",")[2]) for line in ms] == cols.ts.tolist()
    assert encoder.encode(_columns(0)) == b""
    odd = _columns(1, T0 + 123)  # not a whole second: the fraction is kept
    assert b"2026-01-01T00:00:00.123Z" in encoder.encode(odd)


def test_arrow_table_types() -> None:
    table = to_table(_columns(3))
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.column("symbol").to_pylist() == ["BTCUSD"] * 3
    assert table.column("ts").cast(pa.int64()).to_pylist() == _columns(3).ts.tolist()
