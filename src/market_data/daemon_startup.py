"""What the daemon does once at start, each step retried with backoff until it works or the
daemon stops: migrate the database (and fail the jobs a killed process left running), then
backfill the configured history (in the background: the live stream never waits for it).
A backfill asked for over the API is supervised the same way.

Both write what /health shows into the daemon's `RuntimeState`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from market_data import lifecycle
from market_data.config import Settings
from market_data.daemon_state import RuntimeState
from market_data.errors import MarketDataError, PermanentError
from market_data.lifecycle import Backoff, Stopped, retry
from market_data.models import SeriesKey
from market_data.services.backfill import BackfillReport, BackfillService, ItemClaim
from market_data.services.cluster import ClusterMember
from market_data.storage.base import Store

# These are the daemon's own log lines (operators filter on its logger).
log = logging.getLogger("market_data.daemon")

RETRY_MAX_S = 30.0


STATE_ERROR_CHARS = 300  # what /health and /status show of an error


def describe(exc: BaseException) -> str:
    return lifecycle.describe(exc, STATE_ERROR_CHARS)


def _backoff() -> Backoff:
    # Plain doubling, 1 s up to 30 s: one daemon waiting on its own database or exchange.
    return Backoff(1.0, RETRY_MAX_S, jitter=False)


async def retry_until_stopped(
    what: str, step: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> bool:
    """Run `step()` until it succeeds or `stop` is set, backing off; True on success."""

    def log_retry(exc: BaseException, failures: int, delay: float) -> None:
        level = logging.ERROR if isinstance(exc, PermanentError) else logging.WARNING
        log.log(level, "%s unavailable (%s); retrying in %.0f s", what, describe(exc), delay)

    try:
        await retry(step, backoff=_backoff(), stop=stop, on_retry=log_retry)
    except Stopped:
        return False
    return True


async def prepare_database(
    store: Store, state: RuntimeState, member: ClusterMember, *, sole: bool = False
) -> None:
    """Migrate the schema, then mark as failed the jobs left `running` by this daemon's previous
    instance (same DAEMON_ID), by members whose heartbeat expired, and by processes that never
    joined the cluster (one-shot commands). A live member's jobs are its own business. `sole`:
    this daemon holds the database alone (SQLite's lock), so no other member is alive.
    The daemon joins the cluster here (its first heartbeat)."""
    try:
        await store.upgrade()
    except BaseException as exc:
        state.database_ready = False
        state.database_error = describe(exc)
        raise
    state.database_ready = True
    state.database_error = None
    # Joining is the first write: a database that cannot take one keeps the start retrying.
    await member.heartbeat()
    closed = await member.fail_jobs_at_start(sole=sole)
    for owner, n in closed.items():
        log.warning(
            "Marked %d job(s) left running by a previous process (%s) as failed",
            n,
            owner or "unnamed",
        )


class _SeriesFailed(Exception):
    """Some series failed this round (the exchange was down): try those again."""

    def __init__(self, report: BackfillReport) -> None:
        self.report = report


async def backfill_until_done(
    backfill: BackfillService,
    state: RuntimeState,
    stop: asyncio.Event,
    *,
    what: str,
    series: list[SeriesKey] | None = None,
    start_ms: int | None = None,
    claim: ItemClaim | None = None,
) -> bool:
    """Backfill `series` (every configured one when None) from `start_ms` (BACKFILL_DAYS when
    None); series that failed (exchange down, database read-only, full or unreachable) are
    retried with backoff until they succeed or the daemon stops, and the state says `running`
    with the reason meanwhile, never `done`. Unknown symbols are reported, not retried. True once
    every series succeeded. Used at start and for a backfill asked for over the API."""
    state.backfill = "running"
    state.backfill_error = None
    todo = series

    async def one_round() -> bool:
        nonlocal todo
        report = await backfill.run(series=todo, start_ms=start_ms, stop=stop, claim=claim)
        state.unknown_symbols = sorted(set(state.unknown_symbols) | set(report.unknown_symbols))
        if report.cancelled or stop.is_set():
            return False
        failed = report.failed
        if not failed:
            return True
        error = failed[0].error or "failed"
        state.backfill_error = f"retrying {len(failed)} series: {error}"
        if failed[0].exchange_outage:
            state.exchange_error = error
        todo = [SeriesKey(r.symbol, r.timeframe) for r in failed]
        raise _SeriesFailed(report)

    def log_retry(exc: BaseException, failures: int, delay: float) -> None:
        if isinstance(exc, _SeriesFailed):
            failed = exc.report.failed
            log.warning(
                "%s: %d series failed (%s); retrying in %.0f s",
                what,
                len(failed),
                failed[0].error,
                delay,
            )
            return
        # The database went away mid-run (a job could not even be recorded): the same series
        # are tried again once it is back, the daemon does not die of it.
        state.backfill_error = f"retrying: {describe(exc)}"
        log.warning("%s interrupted (%s); retrying in %.0f s", what, describe(exc), delay)

    try:
        finished = await retry(
            one_round,
            backoff=_backoff(),
            stop=stop,
            retry_on=(MarketDataError, _SeriesFailed),
            on_retry=log_retry,
        )
    except Stopped:
        finished = False
    if not finished:
        state.backfill = "stopped"
        return False
    state.exchange_error = state.backfill_error = None
    state.backfill = "done"
    return True


async def logged_failure(what: str, work: Callable[[], Awaitable[object]]) -> None:
    """Work asked for over the API: a failure (the database went away) is logged, and the
    daemon carries on; only a bug (not a MarketDataError) still stops it."""
    try:
        await work()  # created here: a task refused before it starts leaves no coroutine behind
    except MarketDataError as exc:
        log.error("%s asked for over the API failed: %s", what, describe(exc))


def log_start(s: Settings, api: str) -> None:
    """The daemon's first line: what it runs on and with (secrets masked)."""
    log.info(
        "Starting market-data: database=%s symbols=%s timeframes=%s ws=%s backfill=%s "
        "(%g days) update=%s api=%s daemon_id=%s",
        s.safe_database_url,
        ",".join(s.masked_dict()["BITFINEX_SYMBOLS"]),
        ",".join(s.bitfinex_timeframes),
        "on" if s.ws_ingestion_enabled else "off",
        "on" if s.backfill_on_startup else "off",
        s.backfill_days,
        "on" if s.rest_update_enabled else "off",
        api,
        s.daemon_id,
    )
    log.debug("Settings (secrets masked): %s", s.masked_dict())
