"""Live candles: WebSocket shards -> one bounded queue -> one batching writer -> the sink.

    shard 1 ─┐                                  ┌─> CandleSink.write(source="ws")
    shard 2 ─┤                                  │
    catch-up ┼─> asyncio.Queue(bound) ─> writer ┼─> CandleSink.write(source="ws_catchup")
    check  ──┘   (sockets wait when full)   │   └─> CandleSink.write(source="ws_reconcile")
       ^                                    │
       └──── finals committed from the stream (UncheckedFinals)

Every part runs as a named task in one TaskGroup. Stopping is two-phase: when `stop` is set the
shards close their sockets and the catch-up worker and the REST check end; once all of them are
done an end-of-input marker is queued, and the writer flushes everything before returning.

The shards are the exchange's (`Exchange.live_stream`); this module sees only the interface.
Derived timeframes are never subscribed: their sources are (the universe's `native_series()`),
and the sink recomputes the derived candles their writes touch.

Which series are streamed is one input, `set_series` (at start: the universe's native series):
the daemon calls it when the universe changes, and whatever else decides what this daemon
streams goes through it too. Changes are reconciled on the running stream (subscribe the new,
unsubscribe the gone); a series' pair id, once resolved, is kept (catch-up of a series just
removed may still finish).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from market_data.config import Settings
from market_data.exchanges.base import (
    CandleFrame,
    ConnectionInfo,
    Exchange,
    LiveStream,
    StreamOptions,
)
from market_data.lifecycle import Clock, SystemClock
from market_data.models import Candle, SeriesKey
from market_data.rate_limiter import Priority
from market_data.services.live.catchup import CatchUp, CatchupStats
from market_data.services.live.final_check import FinalCheck, FinalCheckStats, UncheckedFinals
from market_data.services.live.pair_ids import resolve_pairs
from market_data.services.live.sibling import SiblingConfirm
from market_data.services.live.writer import CandleWriter, CatchupBatch, QueueItem, WriterStats
from market_data.services.range_check import RangeChecker
from market_data.services.sink import CandleSink
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import Store
from market_data.timeframes import now_ms

# Loggers keep the names they had before services/live/: JSON log lines carry them.
log = logging.getLogger("market_data.services.ws_ingestion")

DEFAULT_GRACE_SECONDS = 3.0
# A final candle from the stream is checked against REST once it has been closed this long, so
# a request can cover more than one period. With many series the budget share below spaces the
# checks further apart, and each request then covers more periods by itself.
DEFAULT_RECONCILE_SECONDS = 30.0
# The check starts at most one request per RATE_LIMIT_DELAY / this share, so a third of the
# REST budget stays for backfill, gap repair and updates even while it is always busy.
RECONCILE_BUDGET_SHARE = 2 / 3


@dataclass(slots=True)
class WsIngestionState:
    """What /status and /metrics show; plain values, read at scrape time.

    `connections` (per shard: id, state, subscriptions, last message, reconnects, messages),
    `queue_depth` / `queue_max_depth` / `queue_bound`, `last_flush_ms`, `candles_written`,
    `pending` (rows held in memory, e.g. during a database outage), `db_outage`;
    `writer.latency` is the receive -> commit histogram; `catchup` counts REST catch-ups;
    `final_check` counts the REST checks of stream-finalized candles.
    """

    queue_bound: int
    queue_max_depth: int = 0
    subscribed_series: int = 0
    unknown_symbols: dict[str, str] = field(default_factory=dict)
    writer: WriterStats = field(default_factory=WriterStats)
    catchup: CatchupStats = field(default_factory=CatchupStats)
    final_check: FinalCheckStats = field(default_factory=FinalCheckStats)
    _check: FinalCheck | None = field(default=None, repr=False, compare=False)
    _queue: asyncio.Queue[QueueItem] | None = field(default=None, repr=False, compare=False)
    _pool: LiveStream | None = field(default=None, repr=False, compare=False)

    @property
    def connections(self) -> list[ConnectionInfo]:
        return self._pool.connections if self._pool is not None else []

    @property
    def failed_subscriptions(self) -> dict[str, str]:
        """Series the exchange refused (10300 and the like), with the reason."""
        if self._pool is None:
            return {}
        return {str(series): reason for series, reason in self._pool.failed.items()}

    @property
    def unchecked_final_oldest_age_seconds(self) -> float:
        """How long the oldest final candle not yet checked against REST has been closed."""
        return self._check.oldest_age_ms() / 1000 if self._check is not None else 0.0

    @property
    def unchecked_final_series(self) -> int:
        return self._check.unchecked.final_series() if self._check is not None else 0

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def last_flush_ms(self) -> int | None:
        return self.writer.last_flush_ms

    @property
    def candles_written(self) -> int:
        return self.writer.candles_written

    @property
    def pending(self) -> int:
        return self.writer.pending

    @property
    def db_outage(self) -> bool:
        return self.writer.db_outage


class WsIngestion:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        exchange: Exchange,
        sink: CandleSink,
        *,
        queue_size: int | None = None,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        connections_per_minute: int | None = None,
        maintenance_timeout: float = 180.0,
        shutdown_timeout: float = 5.0,
        reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS,  # on `clock_ms`; 0 = no check
        confirm_seconds: float = 3600.0,  # a quiet series' confirmation cadence, on `clock_ms`
        clock_ms: Callable[[], int] | None = None,
        universe: SeriesUniverse | None = None,
        on_reconnect: Callable[[], None] | None = None,
        backfill_covers_start: bool = False,
    ) -> None:
        self.settings = settings
        universe = universe or SeriesUniverse.static(settings)
        self._wanted: list[SeriesKey] = universe.native_series()
        self._on_reconnect = on_reconnect
        # Series streamed from the start are backfilled too: no first catch-up for them.
        self._backfill_covers_start = backfill_covers_start
        self._reconnects: dict[int, int] = {}  # per connection, reconnects already reported
        self._pairs: dict[SeriesKey, str] = {}  # resolved pair ids, shared with catch-up
        self._pool: LiveStream | None = None
        self._streaming: set[SeriesKey] = set()  # handed to the stream (and not removed)
        self._stop: asyncio.Event | None = None
        self._reconcile = asyncio.Lock()
        self._store = store
        self._exchange = exchange
        self._sink = sink
        # Frames, not rows. Small on purpose: a frame waiting here counts against the flush
        # deadline, and a full queue pushes back on the sockets (the kernel buffers the rest).
        bound = queue_size or max(1_000, 5 * settings.ws_save_batch_size)
        self._grace_seconds = grace_seconds
        self._reconcile_seconds = reconcile_seconds
        self._confirm_ms = int(confirm_seconds * 1000)
        self._clock_ms = clock_ms or now_ms
        self._options = StreamOptions(
            clock_ms=self._clock_ms,
            max_per_connection=settings.ws_max_subscriptions_per_connection,
            heartbeat_timeout=settings.ws_heartbeat_timeout_seconds,
            backoff_initial=settings.ws_reconnect_initial_backoff,
            backoff_max=settings.ws_reconnect_max_backoff,
            maintenance_timeout=max(maintenance_timeout, settings.ws_heartbeat_timeout_seconds),
            healthy_after=max(10.0, 2 * settings.ws_reconnect_max_backoff),
            connections_per_minute=(
                connections_per_minute or exchange.limits.connections_per_minute
            ),
        )
        self._shutdown_timeout = shutdown_timeout
        self.state = WsIngestionState(queue_bound=bound)

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until `stop` is set; returns once everything received is written."""
        self._stop = stop
        async with self._reconcile:
            pairs = self._pairs
            pairs.update(
                await resolve_pairs(self._exchange, self._wanted, stop, self.state.unknown_symbols)
            )
        if stop.is_set():
            return
        if not pairs:
            log.warning("WebSocket ingestion has no series to subscribe to (yet)")
        queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=self.state.queue_bound)
        s = self.settings
        clock = SystemClock(self._clock_ms)
        check = self._final_check(pairs, queue, clock)
        writer = CandleWriter(
            self._sink,
            queue,
            batch_size=s.ws_save_batch_size,
            flush_seconds=s.ws_save_flush_seconds,
            grace_ms=int(self._grace_seconds * 1000),
            clock=clock,
            backoff_initial=max(0.1, s.ws_reconnect_initial_backoff),
            backoff_max=max(1.0, min(10.0, s.ws_reconnect_max_backoff)),
            shutdown_timeout=self._shutdown_timeout,
            on_final=check.unchecked.note if check is not None else None,
            record_empty=self._store.add_empty_ranges,
        )

        async def enqueue(batch: CatchupBatch) -> None:
            await queue.put(batch)

        catchup = CatchUp(
            self._store,
            self._exchange,
            pairs,
            enqueue,
            sink=self._sink,
            lookback_minutes=s.ws_catchup_lookback_minutes,
            grace_ms=int(self._grace_seconds * 1000),
            clock_ms=self._clock_ms,
            clock=clock,
            retry_initial=max(0.5, s.ws_reconnect_initial_backoff),
            retry_max=max(5.0, s.ws_reconnect_max_backoff),
            left_to_backfill=frozenset(pairs) if self._backfill_covers_start else frozenset(),
        )

        async def deliver(frame: CandleFrame) -> None:
            await queue.put(frame)
            depth = queue.qsize()
            if depth > state.queue_max_depth:
                state.queue_max_depth = depth

        def on_ready(shard_id: int, series: list[SeriesKey]) -> None:
            catchup.request(shard_id, series)
            if check is not None:
                check.watch(series)  # from now on their quiet periods are to confirm
            self._note_reconnect(shard_id)

        state = self.state
        pool = self._exchange.live_stream(dict(pairs), deliver, on_ready, self._options)
        self._pool = pool
        self._streaming = set(pairs)
        state._queue, state._pool = queue, pool
        state.writer, state.catchup = writer.stats, catchup.stats
        if check is not None:
            state.final_check, state._check = check.stats, check
        state.subscribed_series = len(pairs)
        log.info(
            "WebSocket ingestion: %d channels on %d connections",
            len(pairs),
            len(pool.connections),
        )
        # Catch-up and the check write through the queue: the writer must outlive them.
        feeders_done = [asyncio.Event(), asyncio.Event()]

        async def feeding(work: Coroutine[Any, Any, None], done: asyncio.Event) -> None:
            try:
                await work
            finally:
                done.set()

        async def end_of_input() -> None:
            await pool.closed.wait()
            for done in feeders_done:
                await done.wait()
            await queue.put(None)

        async with asyncio.TaskGroup() as tg:
            pool.start(tg, stop)
            tg.create_task(writer.run(), name="ws-writer")
            tg.create_task(feeding(catchup.run(stop), feeders_done[0]), name="ws-catchup")
            if check is not None:
                tg.create_task(feeding(check.run(stop), feeders_done[1]), name="ws-final-check")
            else:
                feeders_done[1].set()
            tg.create_task(end_of_input(), name="ws-end-of-input")
        log.info("WebSocket ingestion stopped; %d candles written", writer.stats.candles_written)

    def _final_check(
        self, pairs: dict[SeriesKey, str], queue: asyncio.Queue[QueueItem], clock: Clock
    ) -> FinalCheck | None:
        """The check of stream-finalized candles against REST (None when switched off)."""
        if self._reconcile_seconds <= 0:
            return None

        async def write_through_writer(candles: Sequence[Candle]) -> None:
            # Through the writer, like catch-up, so a buffered stream row cannot land after
            # the correction and the writer's view of finality stays whole.
            loop = asyncio.get_running_loop()
            batch = CatchupBatch(tuple(candles), loop.create_future(), "ws_reconcile")
            await queue.put(batch)
            await batch.done

        s = self.settings
        checker = RangeChecker(
            self._store,
            self._exchange,
            self._sink,
            source="ws_reconcile",
            priority=Priority.NORMAL,
            write=write_through_writer,
            record_empty=True,
        )
        unchecked = UncheckedFinals()  # a 1m series' checks confirm its coarser siblings too
        sibling = SiblingConfirm(self._store, write_through_writer, unchecked, pairs)
        return FinalCheck(
            checker,
            pairs,
            unchecked,
            batch_age_ms=int(self._reconcile_seconds * 1000),
            spacing_s=s.rate_limit_delay / RECONCILE_BUDGET_SHARE,
            grace_ms=int(self._grace_seconds * 1000),
            # See DueRules: 57 minutes of an hour, whatever the cadence.
            confirm_age_ms=self._confirm_ms * 57 // 60,
            confirm_interval_ms=self._confirm_ms,
            max_periods=self._exchange.limits.page_size,
            clock_ms=self._clock_ms,
            clock=clock,
            retry_initial=max(0.5, s.ws_reconnect_initial_backoff),
            retry_max=max(5.0, s.ws_reconnect_max_backoff),
            sibling=sibling,
        )

    def oldest_unconfirmed(self) -> dict[SeriesKey, int]:
        """Per series, the oldest period the stream watches that REST has not confirmed yet
        (gap detection stops before it)."""
        check = self.state._check
        return check.unchecked.oldest_unconfirmed() if check is not None else {}

    async def set_series(self, series: Iterable[SeriesKey]) -> None:
        """Stream exactly these (native) series from now on: new ones are resolved and
        subscribed, gone ones unsubscribed. Before `run` it only sets what `run` starts with."""
        async with self._reconcile:
            wanted = list(dict.fromkeys(series))
            gone = set(self._wanted) - set(wanted)
            self._wanted = wanted
            pool, stop = self._pool, self._stop
            if pool is None or stop is None or stop.is_set():
                return
            new = [s for s in wanted if s not in self._streaming]
            missing = [s for s in new if s not in self._pairs]
            self._pairs.update(
                await resolve_pairs(self._exchange, missing, stop, self.state.unknown_symbols)
            )
            if gone:
                await pool.remove(gone)
                if self.state._check is not None:
                    # Nothing new joins their spans; what is pending still gets confirmed.
                    self.state._check.unwatch(list(gone))
            added = {s: self._pairs[s] for s in new if s in self._pairs}
            if added:
                await pool.add(added)
            self._streaming = (self._streaming - gone) | set(added)
            self.state.subscribed_series = len(self._streaming)
            if gone or added:
                log.info(
                    "WebSocket ingestion: %d channels added, %d removed", len(added), len(gone)
                )

    def _note_reconnect(self, shard_id: int) -> None:
        """A connection that subscribed again after a reconnect: tell the daemon once (its
        pair list may have changed while we were away)."""
        info = next((c for c in self.connections if c.id == shard_id), None)
        if info is None or info.reconnects <= self._reconnects.get(shard_id, 0):
            return
        self._reconnects[shard_id] = info.reconnects
        if self._on_reconnect is not None:
            self._on_reconnect()

    @property
    def connections(self) -> list[ConnectionInfo]:
        return self._pool.connections if self._pool is not None else []
