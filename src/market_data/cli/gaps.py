"""`market-data gaps detect | repair [--max N] | list [--open]`: gap maintenance, once.

Exit codes: 0 done, 1 the database or the exchange failed (or a repair failed), 2 bad usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from market_data.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    exit_with_error,
    run_async,
    settings_or_exit,
)
from market_data.config import Settings
from market_data.errors import MarketDataError
from market_data.models import Gap, SymbolError, canonical_symbol
from market_data.timeframes import TimeframeError, count_periods, format_log_ts, parse_timeframe

if TYPE_CHECKING:  # services pull in httpx and the store: imported when a command runs
    from market_data.services.gap_repair import GapService

T = TypeVar("T")

LIST_MAX = 1000

gaps_app = typer.Typer(
    name="gaps", help="Detect, repair and list gaps in the stored candles.", no_args_is_help=True
)


async def _with_service(settings: Settings, work: Callable[[GapService], Awaitable[T]]) -> T:
    from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
    from market_data.rate_limiter import RateLimiter
    from market_data.services.gap_repair import GapService
    from market_data.services.sink import CandleSink
    from market_data.storage.sql import open_store

    store = open_store(settings)
    source = settings.bitfinex_source_address
    limiter = RateLimiter.from_settings(settings)
    rest = BitfinexRest(settings.bitfinex_rest_url, limiter, source_address=source)
    exchange = BitfinexExchange(rest, settings.bitfinex_ws_url, source)
    try:
        await store.upgrade()
        service = GapService(settings, store, exchange, CandleSink(store, settings))
        return await work(service)
    finally:
        await exchange.aclose()
        await store.close()


@gaps_app.command("detect")
def detect(
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Re-scan every series whole, not only what changed since the last run."
        ),
    ] = False,
) -> None:
    """Find missing candles in every configured series and record them as gaps."""
    settings = settings_or_exit()

    async def work(service: GapService) -> str:
        report = await service.detect(full=full)
        if report.skipped_reason:
            return f"detection skipped: {report.skipped_reason}"
        return (
            f"{len(report.new_gaps)} new gaps in {report.series_scanned} series; "
            f"open gaps: {report.open_gaps}"
        )

    try:
        typer.echo(run_async(_with_service(settings, work)))
    except MarketDataError as exc:
        exit_with_error(f"gap detection failed: {exc}")


@gaps_app.command("repair")
def repair(
    max_repairs: Annotated[
        int | None,
        typer.Option(
            "--max",
            min=0,
            help=(
                "Exchange requests to spend, not gaps: one request closes every open gap "
                "of a series within one page; most recent first, a quarter for the oldest "
                "(0 = all gaps); default GAP_REPAIR_MAX_REPAIRS_PER_RUN."
            ),
        ),
    ] = None,
) -> None:
    """Fetch the missing candles of open gaps from Bitfinex and store them."""
    settings = settings_or_exit()

    async def work(service: GapService) -> tuple[str, int]:
        report = await service.repair(max_repairs)
        return (
            f"{report.repaired} repaired, {report.empty} closed as empty (no trades), "
            f"{report.failures} failures, {report.candles} candles, "
            f"{report.requests} requests; open gaps: {report.open_gaps}"
        ), report.failures

    try:
        line, failures = run_async(_with_service(settings, work))
    except MarketDataError as exc:
        exit_with_error(f"gap repair failed: {exc}")
    typer.echo(line)
    if failures:
        raise typer.Exit(EXIT_FAILURE)


def _when(ts_ms: int | None) -> str:
    return "-" if ts_ms is None else format_log_ts(ts_ms)[:16]


def _gap_table(gaps: list[Gap], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    with_errors = any(g.last_error for g in gaps)
    names = [
        "id",
        "series",
        "from (UTC)",
        "to (UTC)",
        "missing",
        "status",
        "candles",
        "tries",
        "detected",
        "closed",
    ] + (["last error"] if with_errors else [])
    for name in names:
        right = name in ("id", "missing", "candles", "tries")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=name != "last error",
            overflow="fold",
        )
    for g in gaps:
        row = [
            str(g.id),
            f"{g.symbol}/{g.timeframe}",
            _when(g.gap_start),
            _when(g.gap_end),
            f"{count_periods(g.gap_start, g.gap_end, g.timeframe):,}",
            g.status,
            f"{g.candles_repaired:,}",
            str(g.attempts),
            _when(g.detected_at),
            _when(g.repaired_at),
        ]
        table.add_row(*row, *([(g.last_error or "")[:120]] if with_errors else []))
    if not gaps:
        table.caption = "no gaps"
    return table


@gaps_app.command("list")
def list_gaps(
    open_only: Annotated[
        bool, typer.Option("--open", help="Only gaps not yet repaired (open or failed).")
    ] = False,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    timeframe: Annotated[
        str | None, typer.Option("--timeframe", "-t", help="Only this timeframe.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, max=LIST_MAX, help=f"At most this many, newest first (max {LIST_MAX})."
        ),
    ] = 100,
) -> None:
    """Show recorded gaps, newest first."""
    try:
        sym = canonical_symbol(symbol) if symbol else None
        tf = parse_timeframe(timeframe) if timeframe else None
    except (SymbolError, TimeframeError) as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    settings = settings_or_exit()

    async def fetch() -> list[Gap]:
        from market_data.storage.sql import open_store

        store = open_store(settings)
        try:
            await store.upgrade()
            return await store.list_gaps(
                repaired=False if open_only else None, symbol=sym, timeframe=tf, limit=limit
            )
        finally:
            await store.close()

    try:
        gaps = run_async(fetch())
    except MarketDataError as exc:
        exit_with_error(f"cannot list gaps: {exc}")
    title = f"{'open ' if open_only else ''}gaps ({settings.database_location()})"
    Console(width=max(160, Console().width)).print(_gap_table(gaps, title))


def register(app: typer.Typer) -> None:
    app.add_typer(gaps_app, name="gaps")
