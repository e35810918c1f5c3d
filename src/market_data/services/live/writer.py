"""The one writer behind the WebSocket queue: finality, batching, and riding out database outages.

Finality. Bitfinex never says a candle has closed. A candle is written final=False while its
period runs and becomes final when a newer open time arrives on its series, or when its period
has ended plus a grace (a timer rewrites it final=True with its last known values). Anything
older than the newest open time seen (re-sent candles after a rollover, snapshot history, REST
catch-up) is a correction and is written final, so a finalized period never gets a non-final
state again.

Batching. Rows are keyed (symbol, timeframe, ts); a newer state of the same candle replaces the
buffered one. A batch is written when it reaches `batch_size` rows or its oldest row has waited
`flush_seconds`. While the database is unreachable the buffer keeps absorbing the queue (one
row per candle, so it grows with time, not with the update rate) and the write is retried with
backoff; a hard cap stops draining, which pushes back on the sockets instead of losing data.

Empty periods. A snapshot holds every traded period between its oldest and newest row: the ones
without a row had no trades and are recorded empty with the flush that writes its candles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from market_data.errors import MarketDataError, StorageError, StorageUnavailable
from market_data.exchanges.base import CandleFrame
from market_data.lifecycle import SYSTEM_CLOCK, Backoff, Clock
from market_data.models import Candle, RejectedRow, SeriesKey
from market_data.ranges import Range, proven_empty
from market_data.services.live.latency import LatencyHistogram, commit_histogram
from market_data.services.sink import CandleSink
from market_data.timeframes import next_open
from market_data.timing import Histogram

# Loggers keep the names they had before services/live/: JSON log lines carry them.
log = logging.getLogger("market_data.services.ws_writer")

RowKey = tuple[str, str, int]
_MAX_REFUSED_FRAMES = 1000  # frames with refused rows held between flushes
_MAX_REFUSALS = 3
_MAX_LATENCY_SAMPLES = 100_000  # receive times kept between two commits


@dataclass(slots=True)
class WriterStats:
    updates: int = 0  # candle frames applied
    candles_written: int = 0  # rows committed (after collapsing)
    flushes: int = 0
    write_seconds: float = 0.0  # time spent in successful writes, for the mean write time
    last_flush_ms: int | None = None
    pending: int = 0  # rows held in memory, not yet committed
    db_outage: bool = False
    outages: int = 0
    failed_writes: int = 0
    dropped_rows: int = 0  # refused by the database (StorageError) or lost at a forced stop
    corrections: int = 0  # older candles re-sent after a rollover
    finalized_by_rollover: int = 0
    finalized_by_timer: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # The same latency in seconds as running totals (never reset), for a Prometheus histogram.
    commit_seconds: Histogram = field(default_factory=commit_histogram)


@dataclass(frozen=True, slots=True)
class CatchupBatch:
    """Closed candles fetched over REST; `done` resolves once they are committed."""

    candles: tuple[Candle, ...]
    done: asyncio.Future[None]
    source: str = "ws_catchup"  # the sink's name for who wrote them


QueueItem = CandleFrame | CatchupBatch | None  # None: no more input
# Records [start, end) ranges proven to have had no trades (the store's add_empty_ranges).
RecordEmpty = Callable[[SeriesKey, Sequence[Range]], Awaitable[None]]


@dataclass(slots=True)
class _Track:
    latest: int | None = None  # newest open time seen on the series
    open: Candle | None = None  # the newest candle while its period may still change
    open_end_ms: int = 0  # when that period ends


class CandleWriter:
    def __init__(
        self,
        sink: CandleSink,
        queue: asyncio.Queue[QueueItem],
        *,
        batch_size: int,
        flush_seconds: float,
        grace_ms: int,
        backoff_initial: float,
        backoff_max: float,
        pending_cap: int = 200_000,
        shutdown_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        on_final: Callable[[SeriesKey, int], None] | None = None,
        record_empty: RecordEmpty | None = None,
    ) -> None:
        self._sink = sink
        self._queue = queue
        self._batch_size = max(1, batch_size)
        self._flush_seconds = max(0.0, flush_seconds)
        self._grace_ms = grace_ms
        # Monotonic time for deadlines, the wall clock (the exchange's) for finality, sleeps:
        # all from one clock, so tests move time instead of waiting for it.
        self._clock = clock
        self._tick = max(0.05, min(1.0, self._flush_seconds or 1.0))
        self._pending_cap = max(self._batch_size, pending_cap)
        self._shutdown_timeout = shutdown_timeout
        self._backoff = Backoff(backoff_initial, backoff_max)
        # Told of every candle committed final from the stream (the check against REST).
        self._on_final = on_final
        self._finalized: list[tuple[SeriesKey, int]] = []  # buffered rows it will be told of
        self._record_empty = record_empty
        # No-trade periods the snapshots proved, written with the next batch (one call a series).
        self._empty: dict[SeriesKey, list[Range]] = {}
        self.stats = WriterStats()
        self._rows: dict[RowKey, tuple[Candle, str]] = {}
        self._received: list[float] = []  # receive times of the buffered updates
        self._waiters: list[asyncio.Future[None]] = []
        self._tracks: dict[SeriesKey, _Track] = {}
        self._first_at: float | None = None
        self._retry_at: float | None = None
        self._refusals = 0  # StorageError answers in a row
        # Rows the parser refused, waiting for the next flush to be quarantined (bounded).
        self._refused: list[tuple[SeriesKey, tuple[RejectedRow, ...]]] = []

    # the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Write until the end-of-input marker, then flush what is left and return."""
        queue = self._queue
        next_tick = self._clock.monotonic() + self._tick
        while True:
            now = self._clock.monotonic()
            if now >= next_tick:
                self._finalize_due()
                next_tick = now + self._tick
            if self._flush_due(now):
                await self._flush()
                continue
            if self._retry_at is not None and len(self._rows) >= self._pending_cap:
                await self._clock.sleep(max(0.0, self._retry_at - now))
                continue
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await self._clock.wait(queue.get(), self._deadline(next_tick) - now)
                except TimeoutError:
                    continue
            if item is None:
                break
            if isinstance(item, CandleFrame):
                self._apply_frame(item)
            else:
                self._apply_catchup(item)
            self.stats.pending = len(self._rows)
        await self._final_flush()

    def _deadline(self, next_tick: float) -> float:
        deadline = next_tick
        if self._retry_at is not None:
            return min(deadline, self._retry_at)
        if self._first_at is not None:
            deadline = min(deadline, self._first_at + self._flush_seconds)
        return deadline

    def _flush_due(self, now: float) -> bool:
        if not self._rows and not self._waiters:
            return bool(self._refused) and self._retry_at is None
        if self._retry_at is not None:
            return now >= self._retry_at
        if len(self._rows) >= self._batch_size or self._waiters:
            # A catch-up worker waits for its rows: write them now.
            return True
        return self._first_at is not None and now >= self._first_at + self._flush_seconds

    # finality --------------------------------------------------------------------------------
    def _apply_frame(self, frame: CandleFrame) -> None:
        if frame.rejected and len(self._refused) < _MAX_REFUSED_FRAMES:
            self._refused.append((frame.series, frame.rejected))
        if not frame.candles:
            return
        if frame.snapshot and self._record_empty is not None:
            self._note_snapshot_empty(frame)
        self.stats.updates += 1
        if len(self._received) >= _MAX_LATENCY_SAMPLES:
            del self._received[: _MAX_LATENCY_SAMPLES // 2]  # samples only; rows are kept
        self._received.append(frame.received_at)
        # The flush deadline counts from when the oldest buffered update was received, so
        # time spent waiting in the queue is part of WS_SAVE_FLUSH_SECONDS, not added to it.
        if self._first_at is None or frame.received_at < self._first_at:
            self._first_at = frame.received_at
        track = self._tracks.get(frame.series)
        if track is None:
            track = self._tracks[frame.series] = _Track()
        now_ms = frame.received_ms
        for candle in frame.candles:
            if track.latest is None or candle.ts > track.latest:
                if track.open is not None:
                    self._finalize_open(track)
                    self.stats.finalized_by_rollover += 1
                track.latest = candle.ts
                self._open(track, candle, now_ms)
            elif candle.ts == track.latest and track.open is not None:
                self._open(track, candle, now_ms)
            else:
                if candle.ts < track.latest:
                    self.stats.corrections += 1
                self._put(_final(candle), "ws")

    def _open(self, track: _Track, candle: Candle, now_ms: int) -> None:
        end = next_open(candle.ts, candle.timeframe)
        if end + self._grace_ms <= now_ms:
            track.open = None
            self._put(_final(candle), "ws")
        else:
            track.open, track.open_end_ms = candle, end
            self._put(candle if not candle.final else replace(candle, final=False), "ws")

    def _note_snapshot_empty(self, frame: CandleFrame) -> None:
        """A snapshot holds every traded period from its oldest row to its newest (Bitfinex
        sends only those): the periods between without a row had no trades. It says nothing
        before its oldest row (it stops at its row limit) nor after its newest."""
        ranges = proven_empty(
            [c.ts for c in frame.candles],
            None,
            frame.candles[-1].ts,  # frames are in time order
            frame.received_ms,
            frame.series.timeframe,
            refused=len(frame.rejected),
        )
        if ranges:
            self._empty.setdefault(frame.series, []).extend(ranges)

    def _apply_catchup(self, batch: CatchupBatch) -> None:
        self._waiters.append(batch.done)
        for candle in batch.candles:
            track = self._tracks.get(candle.series)
            if track is None:
                track = self._tracks[candle.series] = _Track()
            if track.open is not None and track.open.ts <= candle.ts:
                track.open = None
            if track.latest is None or candle.ts > track.latest:
                track.latest = candle.ts
            self._put(_final(candle), batch.source)
        if self._first_at is None:
            self._first_at = self._clock.monotonic()

    def _finalize_due(self) -> None:
        now_ms = self._clock.now_ms() - self._grace_ms
        for track in self._tracks.values():
            if track.open is not None and track.open_end_ms <= now_ms:
                self._finalize_open(track)
                self.stats.finalized_by_timer += 1

    def _finalize_open(self, track: _Track) -> None:
        """Finalize the stream's own view of a period: its last update may have been lost, so
        it is reported (once committed) for the check against REST. Re-sent and snapshot
        candles are the exchange's closed values and are not."""
        candle, track.open = track.open, None
        if candle is None:
            return
        self._put(_final(candle), "ws")
        if self._on_final is not None:
            self._finalized.append((candle.series, candle.ts))

    def _put(self, candle: Candle, source: str) -> None:
        key = (candle.symbol, candle.timeframe, candle.ts)
        held = self._rows.get(key)
        if held is not None and held[0].final and not candle.final:
            return
        self._rows[key] = (candle, source)
        if self._first_at is None:
            self._first_at = self._clock.monotonic()

    # writing ---------------------------------------------------------------------------------
    async def _flush(self) -> bool:
        """Write every buffered row; False when the database is unreachable (rows kept)."""
        rows = self._rows
        by_source: dict[str, list[Candle]] = {}
        for candle, source in rows.values():
            by_source.setdefault(source, []).append(candle)
        began = self._clock.monotonic()
        try:
            for source, candles in by_source.items():
                await self._sink.write(candles, source)
            await self._write_empty()
        except StorageUnavailable as exc:
            self._outage(exc)
            return False
        except StorageError as exc:
            # Usually retrying a refused statement cannot succeed, but a driver error may be
            # misread; a few retries cost little. Then drop the batch to keep the stream going.
            self._refusals += 1
            if self._refusals < _MAX_REFUSALS:
                self.stats.failed_writes += 1
                self._retry_at = self._clock.monotonic() + self._backoff.next()
                log.warning("Database refused %d WebSocket candles (%s); retrying", len(rows), exc)
                return False
            self.stats.dropped_rows += len(rows)
            log.error("Database refused %d WebSocket candles; dropped: %s", len(rows), exc)
        else:
            self.stats.candles_written += len(rows)
            if self._on_final is not None:
                for series, ts in self._finalized:
                    self._on_final(series, ts)
        await self._quarantine()
        self._refusals = 0
        committed = self._clock.monotonic()
        stats = self.stats
        stats.write_seconds += committed - began
        if stats.db_outage:
            log.warning("Database reachable again; wrote %d buffered candles", len(rows))
        stats.db_outage = False
        stats.flushes += 1
        stats.last_flush_ms = self._clock.now_ms()
        latency, commit_seconds = stats.latency, stats.commit_seconds
        for received in self._received:
            waited = committed - received
            latency.observe(waited * 1000.0)
            commit_seconds.observe(waited)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._rows, self._received, self._waiters, self._finalized = {}, [], [], []
        self._empty = {}
        self._first_at = self._retry_at = None
        stats.pending = 0
        self._backoff.reset()
        return True

    async def _write_empty(self) -> None:
        # After the candles: a range is never recorded empty ahead of the rows around it.
        if self._record_empty is None:
            return
        for series, ranges in list(self._empty.items()):
            await self._record_empty(series, ranges)
            del self._empty[series]  # written: not again on a retry after an outage

    async def _quarantine(self) -> None:
        refused, self._refused = self._refused, []
        try:
            for series, rows in refused:
                await self._sink.refuse(series, rows, "ws")
        except MarketDataError as exc:  # counted by the sink already; the rows are only lost
            log.warning("Could not quarantine refused WebSocket rows: %s", exc)

    def _outage(self, exc: Exception) -> None:
        stats = self.stats
        stats.failed_writes += 1
        if not stats.db_outage:
            stats.outages += 1
            log.warning("Database unavailable (%s); buffering WebSocket candles in memory", exc)
        stats.db_outage = True
        stats.pending = len(self._rows)
        self._retry_at = self._clock.monotonic() + self._backoff.next()

    async def _final_flush(self) -> None:
        deadline = self._clock.monotonic() + self._shutdown_timeout
        while self._rows or self._waiters:
            if await self._flush():
                return
            wait = (self._retry_at or 0.0) - self._clock.monotonic()
            if self._clock.monotonic() + wait > deadline:
                self.stats.dropped_rows += len(self._rows)
                log.error(
                    "Stopping with the database unreachable: %d WebSocket candles not written",
                    len(self._rows),
                )
                return
            await self._clock.sleep(max(0.0, wait))


def _final(candle: Candle) -> Candle:
    return candle if candle.final else replace(candle, final=True)
