"""`market-data backfill`: fetch history once, with a progress bar per series; resumable.

Ctrl-C (or SIGTERM) stops after the page being written, marks the jobs `cancelled`, and exits
130; a second Ctrl-C aborts at once. Either way a rerun fetches only what is still missing.
Exit codes: 0 every series done, 1 a series failed or a symbol is unknown, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from market_data.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    exit_with_error,
    run_async,
    settings_or_exit,
)
from market_data.config import Settings
from market_data.errors import MarketDataError
from market_data.models import SeriesKey, SymbolError, canonical_symbol
from market_data.services.backfill_plan import DONE, format_eta
from market_data.timeframes import DAY_MS, TimeframeError, from_datetime, parse_timeframe

if TYPE_CHECKING:  # the service pulls in httpx and the store: imported when the command runs
    from market_data.services.backfill import (
        BackfillPlan,
        BackfillReport,
        BackfillService,
        SeriesProgress,
    )

EXIT_INTERRUPTED = 130
REFRESH_SECONDS = 0.25


def parse_when(text: str, *, end_of_day: bool = False) -> int:
    """ISO 8601 date or date-time (UTC unless it says otherwise), or epoch milliseconds.

    A bare date given as an end means the end of that day, so `--end 2026-01-31` includes it.
    """
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        ms = from_datetime(datetime(day.year, day.month, day.day, tzinfo=UTC))
        return ms + DAY_MS if end_of_day else ms
    try:
        return from_datetime(datetime.fromisoformat(raw.replace("Z", "+00:00")))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date (2026-01-31, 2026-01-31T12:00:00Z or epoch ms)"
        ) from None


def _series(settings: Settings, symbols: list[str], timeframes: list[str]) -> list[SeriesKey]:
    try:
        syms = [canonical_symbol(s) for s in symbols] or settings.bitfinex_symbols
        tfs = [parse_timeframe(t) for t in timeframes] or settings.bitfinex_timeframes
    except (SymbolError, TimeframeError) as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    return list(dict.fromkeys(SeriesKey(s, t) for s in syms for t in tfs))


def _describe(prog: SeriesProgress) -> dict[str, Any]:
    eta = prog.eta_seconds()
    return {
        "candles": prog.candles,
        "requests": prog.requests,
        "waits": prog.rate_limit_waits,
        "state": prog.state,
        "eta": "-" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}",
    }


def _plan_text(plan: BackfillPlan, spacing: float) -> str:
    """The plan before it starts: per stage, series and requests; the ETA at the spacing."""
    stages = "; ".join(
        f"{st.name}: {st.series} series, {st.requests} requests" for st in plan.stages
    )
    eta = format_eta(plan.requests_left * spacing)
    return (
        f"plan (recent first): {stages or 'nothing to fetch'}; {plan.requests_left} requests, "
        f"ETA {eta} at {spacing:g} s per request"
    )


def _describe_plan(service: BackfillService, spacing: float) -> dict[str, Any]:
    """The plan's row: the stage running, requests done of the estimate, ETA at the spacing."""
    plan = service.plan_state
    done = sum(st.requests_done for st in plan.stages)
    return {
        "candles": sum(p.candles for p in service.progress.values()),
        "requests": f"{done}/{done + plan.requests_left}",
        "waits": sum(p.rate_limit_waits for p in service.progress.values()),
        "state": f"stage {plan.stage}",
        "eta": format_eta(plan.requests_left * spacing),
    }


def _plan_fraction(service: BackfillService) -> int:
    plan = service.plan_state
    done = sum(st.requests_done for st in plan.stages)
    total = done + plan.requests_left
    return 1000 if plan.stage == DONE or not total else round(1000 * done / total)


async def _watch(service: BackfillService, progress: Progress, spacing: float) -> None:
    tasks: dict[SeriesKey, TaskID] = {}
    plan_task = progress.add_task("plan", total=1000, **_describe_plan(service, spacing))
    while True:
        progress.update(
            plan_task, completed=_plan_fraction(service), **_describe_plan(service, spacing)
        )
        for key, prog in list(service.progress.items()):
            if key not in tasks:
                tasks[key] = progress.add_task(str(key), total=1000, **_describe(prog))
            progress.update(tasks[key], completed=round(prog.fraction * 1000), **_describe(prog))
        await asyncio.sleep(REFRESH_SECONDS)


async def _backfill(
    settings: Settings,
    series: list[SeriesKey],
    start_ms: int | None,
    end_ms: int | None,
    console: Console,
    pattern_timeframes: list[str] | None = None,
) -> BackfillReport | None:
    """`pattern_timeframes`: BITFINEX_SYMBOLS has patterns and no --symbol was given, so the
    pair list is read once and every match is backfilled at these timeframes too."""
    from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
    from market_data.rate_limiter import RateLimiter
    from market_data.services.backfill import BackfillService
    from market_data.services.sink import CandleSink
    from market_data.services.universe import SeriesUniverse
    from market_data.storage.sql import open_store

    store = open_store(settings)
    limiter = RateLimiter.from_settings(settings)
    source = settings.bitfinex_source_address
    rest = BitfinexRest(settings.bitfinex_rest_url, limiter, source_address=source)
    exchange = BitfinexExchange(rest, settings.bitfinex_ws_url, source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await store.upgrade()
        if pattern_timeframes is not None:
            universe = SeriesUniverse(settings)
            universe.refresh(await exchange.list_pairs())
            matched = [SeriesKey(s, t) for s in universe.symbols for t in pattern_timeframes]
            series = list(dict.fromkeys([*series, *matched]))
        service = BackfillService(settings, store, exchange, CandleSink(store, settings))
        plan = await service.preview(series, start_ms, end_ms)
        console.print(_plan_text(plan, settings.rate_limit_delay))
        work = asyncio.create_task(service.run(series, start_ms, end_ms, stop), name="backfill")

        def interrupt() -> None:
            if stop.is_set():
                work.cancel()
                return
            stop.set()
            console.print("stopping after the current page (Ctrl-C again to abort)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        columns = (
            TextColumn("{task.description:<16}"),
            BarColumn(),
            TextColumn(
                "{task.fields[candles]:>9} candles {task.fields[requests]:>9} requests "
                "{task.fields[waits]:>3} rate-limit waits  ETA {task.fields[eta]:>6}  "
                "{task.fields[state]}"
            ),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            watcher = asyncio.create_task(
                _watch(service, progress, settings.rate_limit_delay), name="backfill-progress"
            )
            try:
                return await work
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
                return None
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await _watch_once(service, progress, settings.rate_limit_delay)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await exchange.aclose()
        await store.close()


async def _watch_once(service: BackfillService, progress: Progress, spacing: float) -> None:
    ids = {task.description: task.id for task in progress.tasks}
    if "plan" in ids:
        progress.update(
            ids["plan"], completed=_plan_fraction(service), **_describe_plan(service, spacing)
        )
    for key, prog in service.progress.items():
        if str(key) in ids:
            progress.update(ids[str(key)], completed=round(prog.fraction * 1000), **_describe(prog))


def backfill(
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol", "-s", help="Symbol to backfill (repeatable); default BITFINEX_SYMBOLS."
        ),
    ] = None,
    timeframe: Annotated[
        list[str] | None,
        typer.Option(
            "--timeframe",
            "-t",
            help="Timeframe (repeatable, e.g. 1m, 1h, 4h); default BITFINEX_TIMEFRAMES.",
        ),
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Days of history up to now; default BACKFILL_DAYS.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Start: 2026-01-01, 2026-01-01T06:00:00Z or epoch ms (UTC).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="End (exclusive; a bare date includes that day); default now."),
    ] = None,
) -> None:
    """Fetch candle history from Bitfinex into the database, resuming where it stopped."""
    if days is not None and (start is not None or end is not None):
        exit_with_error("use either --days or --start/--end, not both", code=EXIT_USAGE)
    if days is not None and not 0 < days <= 36_500:
        exit_with_error("--days must be greater than 0 and at most 36500", code=EXIT_USAGE)
    try:
        start_ms = parse_when(start) if start is not None else None
        end_ms = parse_when(end, end_of_day=True) if end is not None else None
    except typer.BadParameter as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        exit_with_error("--start must be before --end", code=EXIT_USAGE)
    overrides: dict[str, Any] = {"backfill_days": days} if days is not None else {}
    settings = settings_or_exit(**overrides)
    series = _series(settings, symbol or [], timeframe or [])
    resolve = not symbol and settings.has_symbol_patterns
    # Checked by _series already.
    tfs = [parse_timeframe(t) for t in timeframe] if timeframe else settings.bitfinex_timeframes
    if start_ms is None and end_ms is not None:
        start_ms = end_ms - round(settings.backfill_days * DAY_MS)
    console = Console(stderr=True)
    try:
        report = run_async(
            _backfill(settings, series, start_ms, end_ms, console, tfs if resolve else None)
        )
    except MarketDataError as exc:
        exit_with_error(f"backfill failed: {exc}")
    if report is None:
        typer.echo("backfill aborted; run it again to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    for result in report.results:
        line = (
            f"{result.symbol}/{result.timeframe}: {result.status}, {result.candles} candles, "
            f"{result.requests} requests"
        )
        typer.echo(line + (f" ({result.error})" if result.error else ""))
    if report.unknown_symbols:
        typer.echo(f"unknown symbols skipped: {', '.join(report.unknown_symbols)}", err=True)
    if report.failed or report.unknown_symbols:
        raise typer.Exit(EXIT_FAILURE)
    if report.cancelled:
        typer.echo("backfill stopped; run it again to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)
