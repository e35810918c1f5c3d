"""Stream candles from the store into CSV or Parquet files with flat memory.

Each series is read in keyset chunks (`Store.candle_columns`); each chunk is encoded and written
on a worker thread while the next one is read (Arrow and the file system release the GIL), so
reading and writing overlap and at most two chunks are in memory. A file is written under
`<name>.part` and renamed when complete: an interrupted or failed export leaves no half file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from market_data.export.files import PARTIAL_SUFFIX, STDOUT, Target
from market_data.export.formats import CsvEncoder, ParquetFile
from market_data.export.options import Format, Timestamps
from market_data.models import SeriesKey, SeriesStats
from market_data.storage.base import COLUMN_CHUNK_ROWS, CandleColumns, Store
from market_data.timeframes import nominal_ms

# Called after each chunk is written: (target, series, rows in the chunk).
OnChunk = Callable[[Target, SeriesKey, int], None]


@dataclass(frozen=True, slots=True)
class FileResult:
    path: str
    rows: int
    series: int


class _Sink(Protocol):
    def write(self, columns: CandleColumns) -> None: ...

    def close(self) -> None: ...


class _CsvSink:
    def __init__(self, stream: BinaryIO, timestamps: Timestamps, *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._encoder = CsvEncoder(timestamps)
        stream.write(self._encoder.header())

    def write(self, columns: CandleColumns) -> None:
        self._stream.write(self._encoder.encode(columns))

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


def _open(path: str, fmt: Format, timestamps: Timestamps) -> _Sink:
    if path == STDOUT:
        return _CsvSink(sys.stdout.buffer, timestamps, owned=False)
    if fmt is Format.parquet:
        return ParquetFile(path)
    return _CsvSink(open(path, "wb"), timestamps, owned=True)  # closed by the sink


def estimate_rows(stats: SeriesStats | None, start_ms: int, end_ms: int) -> int:
    """Rows of a series in [start, end), from its maintained stats (for the progress bar)."""
    if stats is None or stats.first_ts is None or stats.last_ts is None:
        return 0
    low, high = max(start_ms, stats.first_ts), min(end_ms, stats.last_ts + 1)
    if high <= low:
        return 0
    span = stats.last_ts - stats.first_ts + 1
    if low == stats.first_ts and high == stats.last_ts + 1:
        return stats.candle_count
    by_time = (high - low + nominal_ms(stats.timeframe) - 1) // nominal_ms(stats.timeframe)
    return min(stats.candle_count, by_time, round(stats.candle_count * (high - low) / span) + 1)


async def _copy_series(
    store: Store,
    key: SeriesKey,
    start_ms: int,
    end_ms: int,
    sink: _Sink,
    chunk_rows: int,
    done: Callable[[int], None],
) -> int:
    rows = 0
    pending: asyncio.Future[None] | None = None
    pending_rows = 0
    try:
        async for chunk in store.candle_columns(key, start_ms, end_ms, chunk_rows=chunk_rows):
            if pending is not None:
                await pending
                done(pending_rows)
            pending = asyncio.ensure_future(asyncio.to_thread(sink.write, chunk))
            pending_rows = len(chunk)
            rows += len(chunk)
        if pending is not None:
            await pending
            done(pending_rows)
            pending = None
    finally:
        if pending is not None:  # a read failed while a write ran: let the write finish first
            with contextlib.suppress(Exception):
                await pending
    return rows


async def export_targets(
    store: Store,
    targets: Sequence[Target],
    start_ms: int,
    end_ms: int,
    fmt: Format,
    timestamps: Timestamps = Timestamps.iso,
    *,
    chunk_rows: int = COLUMN_CHUNK_ROWS,
    on_chunk: OnChunk | None = None,
) -> list[FileResult]:
    """Write every target; returns rows written per file."""
    results: list[FileResult] = []
    for target in targets:
        final = target.path
        partial = final if final == STDOUT else final + PARTIAL_SUFFIX
        sink = await asyncio.to_thread(_open, partial, fmt, timestamps)
        rows = 0
        try:
            for key in target.series:

                def done(n: int, target: Target = target, key: SeriesKey = key) -> None:
                    if on_chunk is not None:
                        on_chunk(target, key, n)

                rows += await _copy_series(store, key, start_ms, end_ms, sink, chunk_rows, done)
            await asyncio.to_thread(sink.close)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sink.close)
            if partial != STDOUT:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            raise
        if partial != STDOUT:
            os.replace(partial, final)
        results.append(FileResult(final, rows, len(target.series)))
    return results
