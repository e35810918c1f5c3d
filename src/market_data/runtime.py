"""The daemon's own state, as /health and /status show it, and the backfill supervision that
keeps it: a backfill (at start or asked for over the API) runs until every series succeeded.

A series that failed (exchange down, database read-only, full or unreachable) is retried with
backoff, on its own, until it succeeds or the daemon stops; the state says `running` with the
reason meanwhile, never `done`. Unknown symbols are reported, not retried.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from market_data.errors import MarketDataError
from market_data.models import SeriesKey
from market_data.scheduler import wait_for_stop
from market_data.services.backfill import BackfillService

log = logging.getLogger("market_data.daemon")

RETRY_MAX_S = 30.0


@dataclass(slots=True)
class RuntimeState:
    """What /health and /status show about the daemon itself. Times are epoch ms."""

    started_at_ms: int
    phase: str = "starting"  # starting, running, stopping, stopped
    database_ready: bool = False
    database_error: str | None = None
    backfill: str = "pending"  # pending, running, done, failed, disabled, stopped
    backfill_error: str | None = None
    exchange_error: str | None = None
    unknown_symbols: list[str] = field(default_factory=list)
    crashed: str | None = None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def is_exchange_error(error: str) -> bool:
    # Reports carry "<ExceptionName>: text"; the REST client's private subclasses of
    # ExchangeUnavailable start with an underscore.
    return error.startswith(("ExchangeUnavailable", "RateLimited", "_"))


async def backfill_until_done(
    backfill: BackfillService,
    state: RuntimeState,
    stop: asyncio.Event,
    *,
    what: str,
    series: list[SeriesKey] | None = None,
    start_ms: int | None = None,
) -> bool:
    """Backfill `series` (all configured when None) from `start_ms` (BACKFILL_DAYS when None),
    retrying the series that failed with backoff; True once every series succeeded."""
    state.backfill = "running"
    state.backfill_error = None
    todo = series
    delay = 1.0
    while not stop.is_set():
        try:
            report = await backfill.run(series=todo, start_ms=start_ms, stop=stop)
        except MarketDataError as exc:
            # The database went away mid-run (a job could not even be recorded): the same
            # series are tried again once it is back, the daemon does not die of it.
            state.backfill_error = f"retrying: {describe(exc)}"
            log.warning("%s interrupted (%s); retrying in %.0f s", what, describe(exc), delay)
        else:
            state.unknown_symbols = sorted(set(state.unknown_symbols) | set(report.unknown_symbols))
            if report.cancelled or stop.is_set():
                break
            failed = report.failed
            if not failed:
                state.exchange_error = state.backfill_error = None
                state.backfill = "done"
                return True
            error = failed[0].error or "failed"
            state.backfill_error = f"retrying {len(failed)} series: {error}"
            if is_exchange_error(error):
                state.exchange_error = error
            todo = [SeriesKey(r.symbol, r.timeframe) for r in failed]
            log.warning(
                "%s: %d series failed (%s); retrying in %.0f s", what, len(failed), error, delay
            )
        if await wait_for_stop(stop, delay):
            break
        delay = min(delay * 2, RETRY_MAX_S)
    state.backfill = "stopped"
    return False
