"""Bitfinex WebSocket v2 candles: shards, subscriptions, heartbeats, info codes, reconnects.

A shard is one connection carrying up to `max_per_connection` candle channels. Every shard
runs its own connect -> subscribe -> read loop and reconnects on its own (exponential backoff
with jitter, reset after a healthy stretch); the others are untouched. New connections of all
shards go through one `ConnectionPacer`, because Bitfinex counts connections per IP (20/min).

Frames become `Candle`s through the pure parsers in `wire.py` and are handed to the
`deliver` coroutine together with the receive time; `deliver` may block (backpressure). This
module knows nothing about storage or finality: that is the ingestion service's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from market_data.errors import MarketDataError, PayloadError
from market_data.exchanges.base import CandleFrame, ConnectionInfo, Deliver, OnReady
from market_data.exchanges.bitfinex.frames import (
    CandleSnapshot,
    CandleUpdate,
    ErrorEvent,
    InfoEvent,
    SubscribedEvent,
    UnsubscribedEvent,
    parse_ws_message,
)
from market_data.exchanges.bitfinex.pacing import ConnectionPacer
from market_data.exchanges.bitfinex.wire import (
    ERR_SUB_DUPLICATE,
    ERR_SUB_LIMIT,
    INFO_MAINTENANCE_END,
    INFO_MAINTENANCE_START,
    INFO_RECONNECT,
    WS_CONNECTIONS_PER_MINUTE,
)
from market_data.exchanges.bitfinex.ws_rows import parse_rows
from market_data.lifecycle import Backoff, until_stopped
from market_data.models import SeriesKey
from market_data.timeframes import now_ms

# The logger keeps the name it had before the adapter became a package: JSON log lines carry it.
log = logging.getLogger("market_data.exchanges.bitfinex_ws")


@dataclass(frozen=True, slots=True)
class Subscription:
    series: SeriesKey
    key: str  # the exchange's candle key, e.g. trade:1m:tDOGE:USD


@dataclass(frozen=True, slots=True)
class WsOptions:
    url: str
    clock_ms: Callable[[], int]  # the exchange's time; frames are stamped with it
    max_per_connection: int
    heartbeat_timeout: float
    backoff_initial: float
    backoff_max: float
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    subscribe_timeout: float = 10.0
    maintenance_timeout: float = 180.0  # 20060 promises at most ~120 s of silence
    healthy_after: float = 30.0  # a connection up this long resets the backoff
    connections_per_minute: int = WS_CONNECTIONS_PER_MINUTE
    handshake_penalty: float = 60.0  # a refused handshake blocks new connections this long
    source_address: str | None = None  # the local address to connect from (None: any)


class ProtocolViolation(MarketDataError):
    """The server did not speak WebSocket v2 as expected."""


class ShardHost(Protocol):
    """What a shard needs from the pool that owns it (pool.ShardPool)."""

    options: WsOptions
    pacer: ConnectionPacer
    deliver: Deliver
    on_ready: OnReady

    async def relocate(self, sub: Subscription, origin: Shard) -> None: ...

    def report_failed(self, sub: Subscription, reason: str) -> None: ...


class _Restart(Exception):
    """The server asked us to reconnect (info 20051)."""


class Shard:
    """One connection and the channels assigned to it."""

    def __init__(self, pool: ShardHost, shard_id: int, subs: list[Subscription]) -> None:
        self.pool = pool
        self.info = ConnectionInfo(id=shard_id)
        self.subs: dict[str, Subscription] = {s.key: s for s in subs}
        self.capacity = max(1, pool.options.max_per_connection)
        self._ws: ClientConnection | None = None
        self._chan: dict[int, Subscription] = {}
        self._pending: set[str] = set()  # subscribe requests not answered yet
        self._pending_since = 0.0
        self._subscribing = False  # subscribe requests go out on the current connection
        self._paused_since: float | None = None
        self._acked: list[SeriesKey] = []  # subscribed since the last time all were answered
        self._sync_info()

    def _sync_info(self) -> None:
        self.info.subscriptions = sorted(str(s.series) for s in self.subs.values())

    def has_room(self) -> bool:
        return len(self.subs) < self.capacity

    async def add(self, sub: Subscription) -> None:
        self.subs[sub.key] = sub
        self._sync_info()
        ws = self._ws
        if ws is not None and self._subscribing:
            self._want_answer(sub.key)
            # If the connection is going down, the channel is subscribed on reconnect.
            with contextlib.suppress(WebSocketException):
                await ws.send(_subscribe(sub.key))

    async def remove(self, key: str) -> bool:
        """Stop streaming one channel: forget it, and unsubscribe if it is open. False when
        this shard does not carry it."""
        if self.subs.pop(key, None) is None:
            return False
        self._sync_info()
        self._pending.discard(key)
        chan_ids = [chan_id for chan_id, sub in self._chan.items() if sub.key == key]
        for chan_id in chan_ids:
            del self._chan[chan_id]  # frames still in flight for it are dropped
        ws = self._ws
        if ws is not None and self._subscribing:
            with contextlib.suppress(WebSocketException):  # a reconnect subscribes without it
                for chan_id in chan_ids:
                    await ws.send(_unsubscribe(chan_id))
        return True

    async def close(self) -> None:
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def run(self, stop: asyncio.Event) -> None:
        opts = self.pool.options
        backoff = Backoff(opts.backoff_initial, opts.backoff_max)
        try:
            while not stop.is_set() and self.subs:
                self.info.state = "connecting"
                if not await until_stopped(stop, self.pool.pacer.acquire()):
                    break
                started = time.monotonic()
                delay: float | None = None
                try:
                    await self._connect_and_read(stop)
                except _Restart:
                    delay = 0.0
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    self.info.last_error = f"handshake refused: HTTP {status}"
                    if status == 429:
                        self.pool.pacer.penalize()
                except (OSError, TimeoutError, WebSocketException, MarketDataError) as exc:
                    self.info.last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._ws = None
                    self._subscribing = False
                    self._pending.clear()
                    self._chan.clear()
                if stop.is_set():
                    break
                self.info.reconnects += 1
                if time.monotonic() - started >= opts.healthy_after:
                    backoff.reset()
                if delay is None:
                    delay = backoff.next()
                log.warning(
                    "WebSocket connection %d lost (%s); reconnecting in %.1f s",
                    self.info.id,
                    self.info.last_error or "closed",
                    delay,
                )
                self.info.state = "backoff"
                if delay > 0 and not await until_stopped(stop, asyncio.sleep(delay)):
                    break
        finally:
            self.info.state = "closed"

    async def _connect_and_read(self, stop: asyncio.Event) -> None:
        opts = self.pool.options
        async with connect(
            opts.url,
            open_timeout=opts.open_timeout,
            close_timeout=opts.close_timeout,
            # Liveness is Bitfinex's own heartbeat; library pings would also time out while
            # this reader is held back by a full queue (backpressure), which is not death.
            ping_interval=None,
            compression=None,
            max_size=16 * 1024 * 1024,
            # Passed on to loop.create_connection: the exchange counts limits per address.
            local_addr=None if opts.source_address is None else (opts.source_address, 0),
        ) as ws:
            self._ws = ws
            if stop.is_set():
                return
            self.info.connected_since_ms = now_ms()
            self._paused_since = None
            self._acked = []
            await self._handshake(ws)
            await self._subscribe_all(ws)
            await self._read(ws)

    async def _recv(self, ws: ClientConnection, seconds: float) -> str:
        async with asyncio.timeout(seconds):
            raw = await ws.recv()
        self.info.messages += 1
        self.info.last_message_ms = now_ms()
        return raw if isinstance(raw, str) else raw.decode()

    async def _handshake(self, ws: ClientConnection) -> None:
        event = parse_ws_message(await self._recv(ws, self.pool.options.open_timeout))
        if not isinstance(event, InfoEvent) or event.version != 2:
            raise ProtocolViolation(f"expected info event with version 2, got {event!r}")
        # Flags 0: numbers as JSON numbers, no sequence numbers; candles need nothing more.
        await ws.send(json.dumps({"event": "conf", "flags": 0}))

    def _want_answer(self, key: str) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.add(key)

    async def _subscribe_all(self, ws: ClientConnection) -> None:
        self._chan.clear()
        self.info.state = "connecting"
        keys = list(self.subs)
        for key in keys:
            self._want_answer(key)
        # From here on a channel moved to this shard is subscribed by `add` itself.
        self._subscribing = True
        for key in keys:
            await ws.send(_subscribe(key))

    async def _read(self, ws: ClientConnection) -> None:
        opts = self.pool.options
        while True:
            if self._paused_since is not None:
                timeout = self._paused_since + opts.maintenance_timeout - time.monotonic()
            else:
                timeout = opts.heartbeat_timeout
            subscribe_deadline = self._pending_since + opts.subscribe_timeout
            if self._pending:
                timeout = min(timeout, subscribe_deadline - time.monotonic())
            try:
                raw = await self._recv(ws, max(timeout, 0.0))
            except TimeoutError:
                if self._pending and time.monotonic() >= subscribe_deadline:
                    raise ProtocolViolation(
                        f"no answer to subscriptions {sorted(self._pending)}"
                    ) from None
                raise TimeoutError("no message within the heartbeat timeout") from None
            await self._handle(ws, raw)
            # recv() does not suspend while frames are buffered: yield, so that one busy
            # connection cannot fill the whole queue while the others wait.
            await asyncio.sleep(0)
            if not self._pending and (self._acked or self.info.state == "connecting"):
                self._became_ready()

    def _became_ready(self) -> None:
        self.info.state = "paused" if self._paused_since is not None else "subscribed"
        series, self._acked = self._acked, []
        log.info(
            "WebSocket connection %d subscribed to %d channels (%d new)",
            self.info.id,
            len(self._chan),
            len(series),
        )
        if series:
            self.pool.on_ready(self.info.id, series)

    async def _handle(self, ws: ClientConnection, raw: str) -> None:
        try:
            event = parse_ws_message(raw)
        except PayloadError as exc:
            # One unreadable frame is not worth a reconnect; the hole, if any, is caught up.
            self.info.rejected_rows += 1
            log.warning("WebSocket connection %d: unreadable frame: %s", self.info.id, exc)
            return
        if isinstance(event, (CandleUpdate, CandleSnapshot)):
            await self._candles(event)
        elif isinstance(event, SubscribedEvent):
            sub = self.subs.get(event.key) if event.key else None
            if sub is not None:
                self._chan[event.chan_id] = sub
                self._acked.append(sub.series)
                self._pending.discard(event.key)
            else:  # removed while its subscribe request was in flight
                await ws.send(_unsubscribe(event.chan_id))
        elif isinstance(event, ErrorEvent):
            await self._error(event)
        elif isinstance(event, InfoEvent):
            await self._info(ws, event)
        elif isinstance(event, UnsubscribedEvent):
            self._chan.pop(event.chan_id, None)

    async def _candles(self, event: CandleUpdate | CandleSnapshot) -> None:
        sub = self._chan.get(event.chan_id)
        if sub is None:
            return  # a channel we just unsubscribed, or one never ours
        now_ms = self.pool.options.clock_ms()
        received_at = time.monotonic()
        rows = event.rows if isinstance(event, CandleSnapshot) else [event.row]
        candles, rejected = parse_rows(rows, sub.series, now_ms, self._rejected_row)
        if not candles and not rejected:
            return
        await self.pool.deliver(
            CandleFrame(
                series=sub.series,
                candles=tuple(candles),
                snapshot=isinstance(event, CandleSnapshot),
                received_ms=now_ms,
                received_at=received_at,
                shard_id=self.info.id,
                rejected=tuple(rejected),
            )
        )

    def _rejected_row(self, series: SeriesKey, row: object, exc: Exception) -> None:
        self.info.rejected_rows += 1
        count = self.info.rejected_rows
        if count <= 5 or count % 1000 == 0:  # a broken feed must not flood the log
            log.warning(
                "Unusable candle row on %s (%d so far on connection %d): %s (%s)",
                series,
                count,
                self.info.id,
                row,
                exc,
            )

    async def _error(self, event: ErrorEvent) -> None:
        sub = self.subs.get(event.key) if event.key else None
        if sub is None:
            log.warning("WebSocket connection %d: error %s %s", self.info.id, event.code, event.msg)
            return
        self._pending.discard(sub.key)
        if event.code == ERR_SUB_DUPLICATE and event.chan_id is not None:
            self._chan[event.chan_id] = sub
            self._acked.append(sub.series)
        elif event.code == ERR_SUB_LIMIT:
            self.capacity = max(1, len(self._chan))
            del self.subs[sub.key]
            self._sync_info()
            await self.pool.relocate(sub, self)
        else:
            del self.subs[sub.key]
            self._sync_info()
            self.pool.report_failed(sub, f"error {event.code}: {event.msg}")

    async def _info(self, ws: ClientConnection, event: InfoEvent) -> None:
        if event.code == INFO_RECONNECT:
            log.warning("WebSocket connection %d: server restarting (20051)", self.info.id)
            raise _Restart
        if event.code == INFO_MAINTENANCE_START:
            log.warning("WebSocket connection %d: maintenance started (20060)", self.info.id)
            self._paused_since = time.monotonic()
            self.info.state = "paused"
        elif event.code == INFO_MAINTENANCE_END:
            log.info(
                "WebSocket connection %d: maintenance ended (20061), resubscribing", self.info.id
            )
            self._paused_since = None
            for chan_id in list(self._chan):
                await ws.send(_unsubscribe(chan_id))
            await self._subscribe_all(ws)


def _subscribe(key: str) -> str:
    return json.dumps({"event": "subscribe", "channel": "candles", "key": key})


def _unsubscribe(chan_id: int) -> str:
    return json.dumps({"event": "unsubscribe", "chanId": chan_id})
