"""`market-data export`: stored candles to CSV or Parquet files, streamed, with a progress bar.

Series: `--symbol` and `--timeframe` are repeatable; `all` stands for every stored one. Output:
one file, a file per series or per timeframe (`{symbol}`/`{timeframe}` in `--output`, or a
directory), or `-` for CSV on standard output (see `export/files.py`).
Exit codes: 0 written, 1 failed (database, disk; no partial file is left), 2 bad usage, 130
interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from market_data.cli.backfill import parse_when
from market_data.cli.common import EXIT_USAGE, exit_with_error, run_async, settings_or_exit
from market_data.config import Settings
from market_data.errors import MarketDataError
from market_data.export.files import STDOUT, OutputError, Target, check_writable, plan_targets
from market_data.export.options import Format, Timestamps
from market_data.models import SeriesKey, SymbolError, canonical_symbol
from market_data.storage.base import COLUMN_CHUNK_ROWS, MAX_COLUMN_CHUNK_ROWS, MAX_TIME_MS
from market_data.timeframes import TimeframeError, parse_timeframe, timeframe_order

if TYPE_CHECKING:
    from market_data.export.exporter import FileResult

ALL = "all"
_SUFFIXES = {".csv": Format.csv, ".parquet": Format.parquet, ".pq": Format.parquet}


class _NothingToExport(Exception):
    pass


def _is_all(values: list[str]) -> bool:
    return any(v.strip().lower() == ALL for v in values)


def _requested(
    symbols: list[str], timeframes: list[str]
) -> tuple[list[str] | None, list[str] | None]:
    """Canonical symbols and timeframes; None stands for `all` (every stored one)."""
    try:
        syms = None if _is_all(symbols) else [canonical_symbol(s) for s in symbols]
        tfs = None if _is_all(timeframes) else [parse_timeframe(t) for t in timeframes]
    except (SymbolError, TimeframeError) as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    return (
        None if syms is None else list(dict.fromkeys(syms)),
        None if tfs is None else list(dict.fromkeys(tfs)),
    )


def _format(fmt: str | None, output: str) -> Format:
    if fmt is not None:
        try:
            return Format(fmt.lower())
        except ValueError:
            exit_with_error(f"--format must be csv or parquet, got {fmt!r}", code=EXIT_USAGE)
    if output == STDOUT:
        return Format.csv
    found = _SUFFIXES.get(Path(output).suffix.lower())
    if found is None:
        exit_with_error(
            "give --format csv or parquet (the output's name does not say)", code=EXIT_USAGE
        )
    return found


async def _export(
    settings: Settings,
    symbols: list[str] | None,
    timeframes: list[str] | None,
    start_ms: int,
    end_ms: int,
    fmt: Format,
    timestamps: Timestamps,
    output: str,
    chunk_rows: int,
    console: Console,
) -> list[FileResult]:
    from market_data.export.exporter import estimate_rows, export_targets
    from market_data.storage.sql import open_store

    store = open_store(settings)
    try:
        stats = {SeriesKey(s.symbol, s.timeframe): s for s in await store.series_stats()}
        stored = [k for k, s in stats.items() if s.candle_count]
        series = [
            k
            for k in (
                stored
                if symbols is None or timeframes is None
                else [SeriesKey(s, t) for s in symbols for t in timeframes]
            )
            if (symbols is None or k.symbol in symbols)
            and (timeframes is None or k.timeframe in timeframes)
        ]
        if not series:
            raise _NothingToExport("no stored series match --symbol and --timeframe")
        series.sort(key=lambda k: (k.symbol, timeframe_order(k.timeframe)))
        for key in series:
            if key not in stored:
                console.print(f"note: nothing stored for {key}")
        targets = plan_targets(output, series, fmt.value)
        check_writable(targets)
        expected = {k: estimate_rows(stats.get(k), start_ms, end_ms) for k in series}
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:>12,.0f} rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            tasks: dict[str, TaskID] = {
                t.path: progress.add_task(
                    _label(t), total=max(1, sum(expected[k] for k in t.series))
                )
                for t in targets
            }

            def on_chunk(target: Target, key: SeriesKey, rows: int) -> None:
                progress.advance(tasks[target.path], rows)

            results = await export_targets(
                store,
                targets,
                start_ms,
                end_ms,
                fmt,
                timestamps,
                chunk_rows=chunk_rows,
                on_chunk=on_chunk,
            )
            for result in results:  # the estimate may be off: end at 100%
                progress.update(
                    tasks[result.path], total=max(1, result.rows), completed=max(1, result.rows)
                )
        return results
    finally:
        await store.close()


def _label(target: Target) -> str:
    name = "stdout" if target.path == STDOUT else Path(target.path).name
    return name if len(target.series) != 1 else f"{name} ({target.series[0]})"


def export(
    symbol: Annotated[
        list[str],
        typer.Option("--symbol", "-s", help="Symbol (repeatable); `all` for every stored symbol."),
    ],
    timeframe: Annotated[
        list[str],
        typer.Option(
            "--timeframe", "-t", help="Timeframe (repeatable); `all` for every stored one."
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="File; a pattern with {symbol}/{timeframe} (a file each); a directory (a file per "
            "series); `-` for CSV on standard output.",
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="csv or parquet; default from the output's suffix."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="From (inclusive): 2026-01-01, 2026-01-01T06:00:00Z or epoch ms (UTC)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="To (exclusive; a bare date includes that day); default: everything."),
    ] = None,
    timestamps: Annotated[
        str, typer.Option(help="CSV times: iso (2026-02-05T20:00:00Z) or ms (epoch milliseconds).")
    ] = "iso",
    chunk_rows: Annotated[
        int, typer.Option(help="Rows read per query (memory per chunk).", hidden=True)
    ] = COLUMN_CHUNK_ROWS,
) -> None:
    """Write stored candles to CSV or Parquet, streamed in chunks with flat memory."""
    symbols, timeframes = _requested(symbol, timeframe)
    file_format = _format(fmt, output)
    try:
        stamps = Timestamps(timestamps.lower())
    except ValueError:
        exit_with_error(f"--timestamps must be iso or ms, got {timestamps!r}", code=EXIT_USAGE)
    if stamps is Timestamps.ms and file_format is Format.parquet:
        exit_with_error(
            "--timestamps ms is for CSV; Parquet stores a UTC timestamp type", code=EXIT_USAGE
        )
    if output == STDOUT and file_format is Format.parquet:
        exit_with_error("Parquet cannot go to standard output; give a file", code=EXIT_USAGE)
    if not 1 <= chunk_rows <= MAX_COLUMN_CHUNK_ROWS:
        exit_with_error(f"--chunk-rows must be 1..{MAX_COLUMN_CHUNK_ROWS}", code=EXIT_USAGE)
    try:
        start_ms = parse_when(start) if start is not None else 0
        end_ms = parse_when(end, end_of_day=True) if end is not None else MAX_TIME_MS
    except typer.BadParameter as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    if start_ms >= end_ms:
        exit_with_error("--start must be before --end", code=EXIT_USAGE)
    settings = settings_or_exit()
    console = Console(stderr=True)
    try:
        results = run_async(
            _export(
                settings,
                symbols,
                timeframes,
                start_ms,
                end_ms,
                file_format,
                stamps,
                output,
                chunk_rows,
                console,
            )
        )
    except OutputError as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    except _NothingToExport as exc:
        exit_with_error(str(exc))
    except MarketDataError as exc:
        exit_with_error(f"export failed: {exc}")
    except OSError as exc:
        exit_with_error(f"export failed: {exc.strerror or exc}")
    for result in results:
        where = "standard output" if result.path == STDOUT else result.path
        console.print(f"{where}: {result.rows:,} candles from {result.series} series")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
