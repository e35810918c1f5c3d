"""The daemon: builds every part from the settings and runs them in one asyncio TaskGroup.

Named tasks: `api` (the face it runs beside, the HTTP server that `market-data run` composes
with it; up first so /health answers while the rest starts), `startup` (database migrations with
retry, then everything below), `ws_ingestion`, `startup_backfill` (in the background: the live
stream never waits for history; both startup steps are in daemon_startup.py), and one task per
periodic loop (`gap_detection`, `gap_repair`, `update`, `cleanup`, `wal_checkpoint`, and
`pair_refresh` with BITFINEX_SYMBOLS patterns: daemon_pairs.py; daemon_loops.py builds them), and
`cluster_heartbeat` with `ws_channels` (daemon_cluster.py: on PostgreSQL several daemons split
the live channels by leases, the backfill items and gap repairs by claims, and one of them runs
gap detection, retention and the update loop). Work asked for over the API (`manual_backfill`,
`manual_gap_repair`) runs in the same group.

Shutdown (SIGTERM/SIGINT only set the stop event) has two phases: every task sees the stop event
and winds down (no new cycles, WebSocket ingestion flushes every buffered candle, backfill stops at
a page boundary); after a grace period what is left is cancelled. Jobs still `running` are then
marked cancelled, connections closed, and the API stops last. A task that dies unexpectedly stops
the daemon the same way, with exit code 1 (systemd restarts it).

The daemon knows nothing of HTTP or the command line: what it runs beside its work is a
`Companion` (serve, stop), and what the API reads of it is `api.view.DaemonView`, which it
implements.

    python -m market_data.daemon        (or: market-data run; both compose in cli/run.py)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

from market_data.config import Settings
from market_data.daemon_cluster import ClusterDuty, LiveChannels
from market_data.daemon_lock import DaemonLock, acquire_daemon_lock
from market_data.daemon_loops import LoopWork, build_loops
from market_data.daemon_pairs import PairRefresh
from market_data.daemon_readout import DaemonReadout
from market_data.daemon_startup import (
    backfill_until_done,
    describe,
    log_start,
    logged_failure,
    prepare_database,
    retry_until_stopped,
)
from market_data.daemon_state import RuntimeState
from market_data.errors import DaemonBusy, DaemonNotRunning
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.lifecycle import stop_on_signals
from market_data.models import SeriesKey
from market_data.rate_limiter import RateLimiter
from market_data.scheduler import PeriodicLoop
from market_data.services.backfill import (
    BackfillService,
    ItemClaim,
)
from market_data.services.gap_repair import GapService
from market_data.services.live.ingestion import WsIngestion
from market_data.services.retention import RetentionService
from market_data.services.sink import CandleSink
from market_data.services.universe import SeriesUniverse
from market_data.services.update import UpdateService
from market_data.storage.base import Store
from market_data.storage.sql import open_store
from market_data.timeframes import DAY_MS, now_ms
from market_data.timing import UpsertTimings

log = logging.getLogger("market_data.daemon")

# SIGTERM to exit stays under 10 s: every step below takes what is left of this budget.
STOP_BUDGET_S = 9.0
WORK_GRACE_S = 6.0  # phase one: tasks wind down by themselves (WS flush included)
CANCEL_GRACE_S = 1.0  # phase two: cancelled tasks clean up
FINAL_STEP_S = 1.0  # each of: mark jobs cancelled, stop the API, close connections


class Companion(Protocol):
    """What the daemon runs beside its work (the HTTP API): served first, stopped last."""

    @property
    def address(self) -> str:
        """Where it answers, for the start line (`http://127.0.0.1:8100`)."""

    async def serve(self) -> None:
        """Run until `stop()`; returning earlier (or raising) stops the daemon."""

    def stop(self, *, force: bool = False) -> None:
        """Finish: gracefully, or at once with `force`."""


class Daemon(DaemonReadout):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.state = RuntimeState(started_at_ms=now_ms())
        self.timings = UpsertTimings()
        self.store: Store = open_store(
            settings.database_url, upsert_timings=self.timings, owner=settings.daemon_id
        )
        self.cluster = ClusterDuty(settings, self.store)
        self.limiter = RateLimiter.from_settings(settings)
        self.rest = BitfinexRest(
            settings.bitfinex_rest_url,
            self.limiter,
            source_address=settings.bitfinex_source_address,
        )
        # The services see the exchange interface only; this is where Bitfinex is chosen.
        self.exchange = BitfinexExchange(
            self.rest, settings.bitfinex_ws_url, settings.bitfinex_source_address
        )
        # Which series every service works on; with patterns it follows the pair list.
        self.universe = SeriesUniverse(settings)
        u = self.universe
        self.sink = CandleSink(self.store, settings, u)
        self.backfill = BackfillService(settings, self.store, self.exchange, self.sink, universe=u)
        ws_args = (settings, self.store, self.exchange, self.sink)
        reconnected = self._pairs_may_have_changed
        self.ws = (
            WsIngestion(
                *ws_args,
                universe=u,
                on_reconnect=reconnected,
                # Alone on its database, its startup backfill covers all it starts streaming.
                backfill_covers_start=settings.backfill_on_startup and not self.cluster.shared,
            )
            if settings.ws_ingestion_enabled
            else None
        )
        unconfirmed = self.ws.oldest_unconfirmed if self.ws is not None else None
        shared = self.cluster.shared  # several daemons split the repairs, backfills, channels
        self.gaps = GapService(
            *ws_args,
            universe=u,
            unconfirmed=unconfirmed,
            claim=self.cluster.gap_repair if shared else None,
        )
        self.backfill_claim: ItemClaim | None = self.cluster.backfill_item if shared else None
        self.channels = LiveChannels(self.ws, u, self.cluster)
        self.retention = RetentionService(settings, self.store, universe=u)
        self.update = UpdateService(settings, self.store, self.exchange, self.sink, universe=u)
        self.pairs = PairRefresh(u, self.exchange, self.store, self.backfill, self)
        work = LoopWork(
            self._detect_gaps,
            self.gaps.repair,
            self.retention.run_once,
            self.update.run_once,
            self.pairs.refresh,
            self.store.checkpoint,
        )
        self.loops: dict[str, PeriodicLoop] = build_loops(settings, self.cluster, work)
        self._group: asyncio.TaskGroup | None = None
        self._work: dict[str, asyncio.Task[None]] = {}
        self._lock: DaemonLock | None = None

    # -- running -----------------------------------------------------------------------------

    def claim(self) -> None:
        """Take what only one daemon may hold: on SQLite, the database file's lock (held for
        the daemon's life). Called before the API's port is bound, so a second daemon says why
        it cannot run rather than "port taken". Raises PermanentError naming the holder."""
        self._lock = acquire_daemon_lock(self.settings)

    async def run(self, api: Companion) -> int:
        """Run beside `api` until SIGTERM/SIGINT (or `stop` is set); the process exit code."""
        log_start(self.settings, api.address)
        with stop_on_signals(self.stop):
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    serving = group.create_task(self._serve(api), name="api")
                    self._spawn("startup", self._startup())
                    await self.stop.wait()
                    await self._shutdown(api, serving)
            finally:
                self._group = None
        self.state.phase = "stopped"
        return 1 if self.state.crashed else 0

    async def _serve(self, api: Companion) -> None:
        try:
            await api.serve()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # uvicorn calls sys.exit() when its startup fails
            self._crash("api", exc)
            return
        if not self.stop.is_set():
            self._crash("api", RuntimeError("the HTTP server stopped"))

    def _spawn(self, name: str, coro: Coroutine[Any, Any, object]) -> asyncio.Task[None]:
        if self._group is None or self.stop.is_set():
            coro.close()
            raise DaemonNotRunning
        task = self._group.create_task(self._guard(name, coro), name=name)
        self._work[name] = task
        task.add_done_callback(
            lambda t: self._work.pop(name, None) if self._work.get(name) is t else None
        )
        return task

    async def _guard(self, name: str, work: Awaitable[object]) -> None:
        """A task that raises (other than being cancelled) stops the daemon: exit code 1."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._crash(name, exc)

    def _crash(self, name: str, exc: BaseException) -> None:
        log.critical("Task %s died: %s; stopping the daemon", name, describe(exc), exc_info=exc)
        self.state.crashed = f"{name}: {describe(exc)}"
        self.stop.set()

    async def _startup(self) -> None:
        prepared = await retry_until_stopped(
            "Database",
            lambda: prepare_database(
                self.store, self.state, self.cluster.member, sole=self._lock is not None
            ),
            self.stop,
        )
        if not prepared:
            return
        if self.stop.is_set():  # stopped while the database was being prepared: start nothing
            return
        if self.universe.dynamic:
            loaded = await retry_until_stopped("Exchange pair list", self.pairs.load, self.stop)
            if not loaded or self.stop.is_set():
                return
        self.state.phase = "running"
        if self.ws is not None:
            if self.cluster.shared:  # this member's share only, once the cluster says which
                self._spawn("ws_channels", self.channels.follow(self.stop))
            await self.restream()
            self._spawn("ws_ingestion", self.ws.run(self.stop))
        if self.settings.backfill_on_startup:
            self._spawn("startup_backfill", self._startup_backfill())
        else:
            self.state.backfill = "disabled"
        for loop in self.loops.values():
            self._spawn(loop.name, loop.run(self.stop))

    async def restream(self) -> None:
        await self.channels.restream()

    async def _startup_backfill(self) -> None:
        done = await backfill_until_done(
            self.backfill, self.state, self.stop, what="Startup backfill", claim=self.backfill_claim
        )
        if done:
            # Fresh history: look for holes right after it rather than an interval from now.
            self.loops["gap_detection"].trigger()

    def _pairs_may_have_changed(self) -> None:
        loop = self.loops.get("pair_refresh")
        if loop is not None:
            loop.trigger()

    async def _detect_gaps(self) -> object:
        report = await self.gaps.detect()
        if report.new_gaps:
            self.loops["gap_repair"].trigger()
        return report

    # -- work asked for over the API ---------------------------------------------------------

    def trigger_backfill(self, series: list[SeriesKey] | None, days: float | None) -> str:
        if "startup_backfill" in self._work or "manual_backfill" in self._work:
            raise DaemonBusy("a backfill is already running")
        start_ms = now_ms() - int(days * DAY_MS) if days is not None else None
        # Retried like the startup one until every series succeeded (full disk, outage...).
        self._spawn(
            "manual_backfill",
            backfill_until_done(
                self.backfill,
                self.state,
                self.stop,
                what="Backfill asked for over the API",
                series=series,
                start_ms=start_ms,
            ),
        )
        return "manual_backfill"

    def trigger_gap_repair(self, max_repairs: int | None) -> str:
        if "manual_gap_repair" in self._work or self.loops["gap_repair"].status.running:
            raise DaemonBusy("a gap repair is already running")
        self._spawn(
            "manual_gap_repair",
            logged_failure("Gap repair", lambda: self.gaps.repair(max_repairs=max_repairs)),
        )
        return "manual_gap_repair"

    # -- stopping ----------------------------------------------------------------------------

    async def _shutdown(self, api: Companion, serving: asyncio.Task[None]) -> None:
        began = time.monotonic()
        deadline = began + STOP_BUDGET_S

        def left(cap: float) -> float:
            return max(0.05, min(cap, deadline - time.monotonic()))

        self.state.phase = "stopping"
        log.info("Stopping: finishing in-flight work (up to %.0f s)", WORK_GRACE_S)
        pending = set(self._work.values())
        if pending:
            _, pending = await asyncio.wait(pending, timeout=left(WORK_GRACE_S))
        if pending:
            log.warning("Cancelling %s", ", ".join(sorted(t.get_name() for t in pending)))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=left(CANCEL_GRACE_S))
        if self.state.database_ready:
            try:
                n = await asyncio.wait_for(
                    self.store.fail_running_jobs(
                        "cancelled: the daemon stopped", "cancelled", owner=self.settings.daemon_id
                    ),
                    left(FINAL_STEP_S),
                )
                if n:
                    log.info("Marked %d running job(s) cancelled", n)
                await asyncio.wait_for(self.cluster.leave(), left(FINAL_STEP_S))
            except Exception as exc:
                log.warning("Could not mark running jobs cancelled: %s", describe(exc))
        api.stop()
        done, _ = await asyncio.wait({serving}, timeout=left(FINAL_STEP_S))
        if not done:
            api.stop(force=True)
            serving.cancel()
        await self.close(left(FINAL_STEP_S))
        written = dict(sorted(self.sink.stats.written_by_source.items()))
        log.info(
            "Stopped in %.1f s; candles written by source: %s", time.monotonic() - began, written
        )

    async def close(self, seconds: float = FINAL_STEP_S) -> None:
        """Close the connections (exchange, database); `run` does it on its way out."""
        for close in (self.rest.aclose, self.store.close):
            try:
                await asyncio.wait_for(close(), seconds)
            except Exception as exc:
                log.warning("Closing: %s", describe(exc))
        if self._lock is not None:  # only once the database is closed
            self._lock.release()
            self._lock = None


if __name__ == "__main__":
    # `python -m market_data.daemon` (CONTRACT section 1) is the script entry point, like
    # __main__.py: it composes the daemon with its HTTP API where `market-data run` does. The
    # module itself imports neither the API nor the command line.
    from market_data.cli.run import main

    sys.exit(main())
