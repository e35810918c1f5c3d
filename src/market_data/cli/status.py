"""`market-data status`: per stored series, how much is there, how fresh, and its open gaps;
then the backfill plan and the daemons sharing the database (cluster members, alive or not).
`--json` keeps to the series.

With BITFINEX_SYMBOLS patterns the exchange's pair list is read once, so a stored series whose
pair is no longer listed shows as delisted (when the exchange cannot be reached, no state is
shown rather than a guess)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from market_data.cli.common import exit_with_error, run_async, settings_or_exit
from market_data.config import Settings
from market_data.errors import MarketDataError, StorageError
from market_data.models import SeriesKey, SeriesStats
from market_data.timeframes import (
    format_log_ts,
    format_ts,
    next_open,
    now_ms,
    timeframe_order,
)

if TYPE_CHECKING:  # the services pull in the store: imported when the command runs
    from market_data.exchanges.base import Exchange
    from market_data.services.backfill_plan import BackfillPlan
    from market_data.services.sink import CandleSink
    from market_data.services.universe import SeriesUniverse
    from market_data.storage.base import Store

# Open gaps are counted from one bounded listing; beyond it the count is shown as "N+".
GAP_LISTING_LIMIT = 1000


PAIR_LIST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class StatusRow:
    stats: SeriesStats
    lag_ms: int | None
    open_gaps: int
    state: str | None = None  # active or delisted; None when not known


async def _universe(settings: Settings, stored: list[str]) -> SeriesUniverse | None:
    """The series the patterns give now, stored symbols no longer listed marked delisted; None
    when the pair list could not be read."""
    from market_data.exchanges.bitfinex import BitfinexRest
    from market_data.rate_limiter import RateLimiter
    from market_data.services.universe import SeriesUniverse

    rest = BitfinexRest(
        settings.bitfinex_rest_url, RateLimiter.from_settings(settings), unavailable_attempts=1
    )
    try:
        pairs = await asyncio.wait_for(rest.fetch_pairs(), PAIR_LIST_TIMEOUT_S)
    except (MarketDataError, TimeoutError):
        return None
    finally:
        await rest.aclose()
    universe = SeriesUniverse(settings)
    universe.refresh(pairs)
    universe.note_stored(stored)
    return universe


async def _preview_plan(
    settings: Settings, store: Store, series: list[SeriesKey] | None
) -> BackfillPlan:
    """The plan a backfill would start with now, read from the store alone (nothing is
    fetched, so no exchange is needed)."""
    from market_data.exchanges.bitfinex.exchange import LIMITS
    from market_data.services.backfill import BackfillService

    service = BackfillService(
        settings,
        store,
        cast("Exchange", None),
        cast("CandleSink", None),
        page_size=LIMITS.page_size,
    )
    return await service.preview(series)


@dataclass(frozen=True, slots=True)
class MemberRow:
    id: str
    heartbeat_age_ms: int
    channels: int
    jobs: int
    alive: bool


async def _collect(
    settings: Settings, now_ms: int
) -> tuple[list[StatusRow], bool, BackfillPlan | None, list[MemberRow]]:
    from market_data.storage.sql import open_store

    store = open_store(settings)
    try:
        stats = await store.series_stats()
        gaps = await store.list_gaps(repaired=False, limit=GAP_LISTING_LIMIT)
        universe = None
        if settings.has_symbol_patterns:
            universe = await _universe(settings, sorted({s.symbol for s in stats}))
        # What a backfill of the configured series would fetch now (from the store alone);
        # unknown when the patterns could not be resolved.
        plan = None
        if universe is not None or not settings.has_symbol_patterns:
            series = None if universe is None else universe.all_series()
            plan = await _preview_plan(settings, store, series)
        db_now, records = await store.list_members()
    finally:
        await store.close()
    ttl_ms = settings.lease_ttl_seconds * 1000
    members = [
        MemberRow(
            m.id, db_now - m.heartbeat_at, m.channels, m.jobs, db_now - m.heartbeat_at < ttl_ms
        )
        for m in records
    ]
    open_by_series = Counter(gap.series for gap in gaps)
    rows = [
        StatusRow(
            s,
            lag_ms(s, now_ms),
            open_by_series[SeriesKey(s.symbol, s.timeframe)],
            None if universe is None else universe.state_of(s.symbol),
        )
        for s in stats
    ]
    rows.sort(key=lambda r: (r.stats.symbol, timeframe_order(r.stats.timeframe)))
    return rows, len(gaps) >= GAP_LISTING_LIMIT, plan, members


def lag_ms(stats: SeriesStats, now_ms: int) -> int | None:
    """How long ago the newest stored candle's period ended (0 while it is still open)."""
    if stats.last_ts is None:
        return None
    return max(0, now_ms - next_open(stats.last_ts, stats.timeframe))


def format_duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms // 1000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def _as_json(rows: list[StatusRow]) -> list[dict[str, Any]]:
    return [
        {
            "symbol": r.stats.symbol,
            "timeframe": r.stats.timeframe,
            "candles": r.stats.candle_count,
            "first": None if r.stats.first_ts is None else format_ts(r.stats.first_ts),
            "last": None if r.stats.last_ts is None else format_ts(r.stats.last_ts),
            "lag_seconds": None if r.lag_ms is None else r.lag_ms / 1000,
            "open_gaps": r.open_gaps,
            "state": r.state,
        }
        for r in rows
    ]


def _table(rows: list[StatusRow], gaps_truncated: bool, where: str) -> Table:
    table = Table(title=f"market-data status ({where})", title_justify="left")
    for name in ("symbol", "timeframe", "candles", "first (UTC)", "last (UTC)", "lag", "open gaps"):
        numeric = name in ("candles", "open gaps")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    suffix = "+" if gaps_truncated else ""
    for r in rows:
        s = r.stats
        table.add_row(
            f"{s.symbol} (delisted)" if r.state == "delisted" else s.symbol,
            s.timeframe,
            f"{s.candle_count:,}",
            "-" if s.first_ts is None else format_log_ts(s.first_ts),
            "-" if s.last_ts is None else format_log_ts(s.last_ts),
            format_duration(r.lag_ms),
            f"{r.open_gaps}{suffix if r.open_gaps else ''}",
        )
    if not rows:
        table.caption = "no candles stored yet"
    return table


def _members_table(members: list[MemberRow]) -> Table:
    table = Table(title="daemons on this database", title_justify="left")
    for name in ("daemon", "heartbeat", "channels", "jobs", "state"):
        numeric = name in ("channels", "jobs")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for m in members:
        table.add_row(
            m.id,
            f"{format_duration(max(0, m.heartbeat_age_ms))} ago",
            str(m.channels),
            str(m.jobs),
            "alive" if m.alive else "dead",
        )
    if not members:
        table.caption = "no daemon running"
    return table


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show every stored series: candles, first and last candle, lag behind now, open gaps."""
    settings = settings_or_exit()
    where = settings.database_location()
    try:
        rows, truncated, plan, members = run_async(_collect(settings, now_ms()))
    except MarketDataError as exc:
        problem = str(exc) if where in str(exc) else f"database at {where}: {exc}"
        if isinstance(exc, StorageError):
            problem += " (a new database needs `market-data db upgrade` first)"
        exit_with_error(f"cannot read status: {problem}")
    if as_json:
        typer.echo(json.dumps(_as_json(rows), indent=2))
        return
    console = Console(width=max(100, Console().width))
    console.print(_table(rows, truncated, where))
    if plan is not None:
        console.print(f"backfill plan: {plan.line(settings.rate_limit_delay)}", highlight=False)
    console.print(_members_table(members))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
