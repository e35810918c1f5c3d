"""Driver rows or bytes -> `CandleColumns`, one whole chunk at a time (numpy, no per-row work).

SQLite's ADBC driver hands back Arrow columns (`from_arrow`, zero-copy where the types allow).
PostgreSQL sends binary COPY, whose rows are fixed-width for these columns, so numpy reads them
in place (`from_pg_binary`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from market_data.models import SeriesKey
from market_data.storage.base import CandleColumns

# Selected in this order by both dialects.
COLUMN_NAMES = ("ts", "open", "high", "low", "close", "volume", "final")

# Binary COPY: an 11-byte signature, int32 flags and int32 header-extension length; each row an
# int16 field count, then per field an int32 length and the value; an int16 -1 at the end.
_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_PG_HEADER = 19
_PG_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),  # timestamptz: microseconds since 2000-01-01 UTC
        ("open_len", ">i4"),
        ("open", ">f8"),
        ("high_len", ">i4"),
        ("high", ">f8"),
        ("low_len", ">i4"),
        ("low", ">f8"),
        ("close_len", ">i4"),
        ("close", ">f8"),
        ("volume_len", ">i4"),
        ("volume", ">f8"),
        ("final_len", ">i4"),
        ("final", "u1"),
    ]
)
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


def from_arrow(series: SeriesKey, table: Any) -> CandleColumns:
    """An Arrow table of (ts epoch ms, open, high, low, close, volume, final) -> columns.

    An empty result carries no types (SQLite's are per value), hence the casts; on data they
    are no-ops."""

    def column(i: int, dtype: type[np.generic]) -> Any:
        return np.asarray(table.column(i).to_numpy(), dtype=dtype)

    return CandleColumns(
        series.symbol,
        series.timeframe,
        ts=column(0, np.int64),
        open=column(1, np.float64),
        high=column(2, np.float64),
        low=column(3, np.float64),
        close=column(4, np.float64),
        volume=column(5, np.float64),
        final=column(6, np.int64) != 0,
    )


def from_pg_binary(series: SeriesKey, data: bytes | bytearray) -> CandleColumns:
    """The binary COPY of `SELECT ts, open, high, low, close, volume, final` -> columns.

    Every column is NOT NULL and fixed-width, so each row is exactly `_PG_ROW`; the field
    counts and lengths are checked, so a change of the query cannot be misread silently.
    """
    if not data.startswith(_PG_SIGNATURE) or len(data) < _PG_HEADER + 2:
        raise ValueError("not a PostgreSQL binary COPY stream")
    extension = int.from_bytes(data[15:19], "big")
    start = _PG_HEADER + extension
    body = len(data) - start - 2  # without the trailer
    if body % _PG_ROW.itemsize or data[-2:] != b"\xff\xff":
        raise ValueError("unexpected binary COPY layout")
    rows = np.frombuffer(data, dtype=_PG_ROW, count=body // _PG_ROW.itemsize, offset=start)
    if len(rows) and not (
        (rows["fields"] == len(COLUMN_NAMES)).all()
        and (rows["ts_len"] == 8).all()
        and (rows["final_len"] == 1).all()
        and all((rows[f"{name}_len"] == 8).all() for name in COLUMN_NAMES[1:6])
    ):
        raise ValueError("unexpected binary COPY row layout")
    return CandleColumns(
        series.symbol,
        series.timeframe,
        ts=rows["ts"] // 1000 + _PG_EPOCH_MS,
        open=rows["open"].astype(np.float64),
        high=rows["high"].astype(np.float64),
        low=rows["low"].astype(np.float64),
        close=rows["close"].astype(np.float64),
        volume=rows["volume"].astype(np.float64),
        final=rows["final"] != 0,
    )
