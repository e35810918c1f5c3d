"""The WebSocket side of the simulator: `/ws/2` with candle channels (bitfinex-api.md §4).

A `Session` is one client connection: its channels, flags and heartbeats. The `Hub` follows the
trades of every pair some channel listens to and sends each channel its changed candle; nothing
is pushed on period boundaries, exactly as on Bitfinex.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from market_data.simulator.config import SimContext, logger
from market_data.simulator.corrupt import corrupt_rows, dumps_rows
from market_data.simulator.prices import Ohlcv
from market_data.simulator.rest import SERVED_TIMEFRAMES
from market_data.simulator.wire import dumps, row_json, rows_json
from market_data.timeframes import HOUR_MS, align, from_exchange

FLAG_TIMESTAMP = 32768
FLAG_SEQ_ALL = 65536
INFO_RESTART = {"event": "info", "code": 20051, "msg": "Stopping. Please try to reconnect"}
INFO_MAINTENANCE = {
    "event": "info",
    "code": 20060,
    "msg": "Entering in Maintenance mode. Please pause any activity and resume after receiving "
    "the info message 20061 (it should take 120 seconds at most).",
}
INFO_MAINTENANCE_END = {
    "event": "info",
    "code": 20061,
    "msg": "Maintenance ended. You can resume normal activity. It is advised to "
    "unsubscribe/subscribe again all channels.",
}
_MAX_MESSAGE = 4096
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


@dataclass(eq=False, slots=True)
class Channel:
    chan_id: int
    key: str
    index: int
    tf: str
    session: Session
    last_row: Ohlcv | None = None
    last_sent: float = 0.0  # monotonic time of the last frame on this channel
    stale: bool = False  # after maintenance ends: silent until the client resubscribes


class Hub:
    """Sessions, channels by pair, and one trade-following task per pair in use."""

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self.sessions: set[Session] = set()
        self._by_pair: dict[int, set[Channel]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._next_chan_id = 1000

    def next_chan_id(self) -> int:
        self._next_chan_id += 1
        return self._next_chan_id

    def attach(self, channel: Channel) -> None:
        self._by_pair.setdefault(channel.index, set()).add(channel)
        task = self._tasks.get(channel.index)
        if task is None or task.done():
            self._tasks[channel.index] = asyncio.create_task(
                self._follow(channel.index), name=f"sim-trades-{channel.index}"
            )

    def detach(self, channel: Channel) -> None:
        channels = self._by_pair.get(channel.index)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._by_pair[channel.index]
                task = self._tasks.pop(channel.index, None)
                if task is not None:
                    task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def broadcast(self, event: dict[str, Any], *, close_code: int | None = None) -> None:
        text = dumps(event)
        sessions = list(self.sessions)
        await asyncio.gather(*(s.send_info(text, close_code) for s in sessions))

    def mark_all_stale(self) -> None:
        for session in self.sessions:
            for channel in session.channels.values():
                channel.stale = True

    async def _follow(self, index: int) -> None:
        market = self.ctx.market
        while self._by_pair.get(index):
            now = market.now_ms()
            when = market.next_trade_ms(index, now)
            await self.ctx.sleep_until_ms(when if when is not None else now + HOUR_MS)
            if when is not None:
                await self._publish(index)

    async def _publish(self, index: int) -> None:
        ctx = self.ctx
        mono = time.monotonic()
        if ctx.state.maintenance(mono) or ctx.state.stall(mono) or ctx.faults.firehose:
            return
        now = ctx.market.now_ms()
        current: dict[str, Ohlcv | None] = {}
        for channel in list(self._by_pair.get(index, ())):
            if channel.stale or channel.session.closed:
                continue
            if channel.tf not in current:
                current[channel.tf] = ctx.market.current(index, channel.tf, now)
            row = current[channel.tf]
            if row is None or row == channel.last_row:
                continue
            previous, channel.last_row = channel.last_row, row
            if ctx.faults.ws_loss_rate and ctx.rng.random() < ctx.faults.ws_loss_rate:
                ctx.stats.faults_fired["ws_update_lost"] += 1
                logger.info("simulator fault: update lost on %s", channel.key)
                continue
            await channel.session.send_channel(channel, _wire(ctx, [row])[1:-1])
            ctx.stats.ws_updates_sent += 1
            if (
                previous is not None
                and previous[0] != row[0]
                and ctx.rng.random() < ctx.config.ws_resend_probability
            ):
                # Bitfinex re-sends the previous candle after a new one has begun.
                again = ctx.market.period(index, channel.tf, previous[0], now)
                if again is not None:
                    await channel.session.send_channel(channel, row_json(again))
                    ctx.stats.ws_updates_sent += 1


class Session:
    """One client connection."""

    def __init__(self, ctx: SimContext, hub: Hub, ws: ServerConnection) -> None:
        self.ctx = ctx
        self.hub = hub
        self.ws = ws
        self.channels: dict[int, Channel] = {}
        self.by_key: dict[str, Channel] = {}
        self.flags = 0
        self.seq = 0
        self.sent = 0
        self.closed = False

    async def run(self) -> None:
        ctx = self.ctx
        self.hub.sessions.add(self)
        ctx.stats.ws_opened += 1
        ctx.stats.ws_active += 1
        status = 0 if ctx.state.maintenance(time.monotonic()) else 1
        info = {"event": "info", "version": 2, "serverId": str(uuid.uuid4()),
                "platform": {"status": status}}
        helpers = [
            asyncio.create_task(self._heartbeats(), name="sim-ws-hb"),
            asyncio.create_task(self._firehose(), name="sim-ws-firehose"),
        ]
        try:
            await self._send(dumps(info))
            async for message in self.ws:
                await self._handle(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for task in helpers:
                task.cancel()
            for channel in self.channels.values():
                self.hub.detach(channel)
            self.hub.sessions.discard(self)
            ctx.stats.ws_active -= 1
            ctx.stats.ws_closed += 1

    # ---- sending ----------------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            self.closed = True
            return
        self.sent += 1
        self.ctx.stats.ws_messages_sent += 1
        drop_after = self.ctx.faults.ws_drop_after
        if drop_after and self.sent >= drop_after:
            self.closed = True
            self.ctx.stats.faults_fired["ws_drop"] += 1
            logger.warning("simulator fault: connection dropped after %d messages", self.sent)
            self.ws.transport.abort()

    async def send_channel(self, channel: Channel, payload: str) -> None:
        channel.last_sent = time.monotonic()
        extra = ""
        if self.flags & FLAG_SEQ_ALL:
            self.seq += 1
            extra = f",{self.seq}"
        if self.flags & FLAG_TIMESTAMP:
            extra += f",{int(time.time() * 1000)}"
        await self._send(f"[{channel.chan_id},{payload}{extra}]")

    async def send_info(self, text: str, close_code: int | None) -> None:
        await self._send(text)
        if close_code is not None and not self.closed:
            self.closed = True
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(close_code, "restart")

    async def _event(self, event: dict[str, Any]) -> None:
        await self._send(dumps(event))

    async def _error(self, code: int, msg: str, request: dict[str, Any], **extra: Any) -> None:
        echo = {k: v for k, v in request.items() if k != "event"}
        self.ctx.stats.ws_errors_sent[code] += 1
        await self._event({"event": "error", "msg": msg, "code": code, **echo, **extra})

    # ---- requests ---------------------------------------------------------------------------

    async def _handle(self, message: str | bytes) -> None:
        try:
            request = json.loads(message[:_MAX_MESSAGE])
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self._error(10000, "event: invalid", {})
            return
        event = request.get("event")
        if event == "subscribe":
            await self._subscribe(request)
        elif event == "unsubscribe":
            await self._unsubscribe(request)
        elif event == "ping":
            await self._event({"event": "pong", "ts": int(time.time() * 1000),
                               "cid": request.get("cid")})
        elif event == "conf":
            flags = request.get("flags", 0)
            self.flags = flags if isinstance(flags, int) else 0
            await self._event({"event": "conf", "status": "OK", "flags": self.flags})
        else:
            await self._error(10000, f"event: invalid ({event})", request)

    async def _subscribe(self, request: dict[str, Any]) -> None:
        ctx = self.ctx
        if request.get("channel") != "candles":
            await self._error(10300, "channel: unknown", request)
            return
        key = request.get("key")
        fields = key.split(":", 2) if isinstance(key, str) else []
        if len(fields) != 3 or fields[0] != "trade" or not fields[2].startswith("t"):
            await self._error(10300, "key: invalid", request)
            return
        if fields[1] not in SERVED_TIMEFRAMES:
            await self._error(10300, "time_frame: invalid", request)
            return
        index = ctx.market.index_of_pair(fields[2][1:])
        if index is None:
            await self._error(10300, "symbol: invalid", request)
            return
        assert isinstance(key, str)
        existing = self.by_key.get(key)
        if existing is not None and not existing.stale:
            await self._error(10301, "subscribe: dup", request, chanId=existing.chan_id)
            return
        if existing is not None:
            self._drop(existing)
        if len(self.channels) >= ctx.config.ws_channel_limit:
            await self._error(10305, "subscribe: limit", request)
            return
        tf = from_exchange(fields[1])
        channel = Channel(self.hub.next_chan_id(), key, index, tf, self,
                          last_sent=time.monotonic())
        self.channels[channel.chan_id] = channel
        self.by_key[key] = channel
        ack: dict[str, Any] = {"event": "subscribed", "channel": "candles",
                               "chanId": channel.chan_id, "key": key}
        if "subId" in request:
            ack["subId"] = request["subId"]
        await self._event(ack)
        now = ctx.market.now_ms()
        rows = ctx.market.select(index, tf, 0, now, now, limit=ctx.config.ws_snapshot_length,
                                 ascending=False)
        channel.last_row = ctx.market.current(index, tf, now)
        await self.send_channel(channel, _wire(ctx, rows))
        ctx.stats.ws_subscriptions += 1
        if channel.chan_id in self.channels:
            self.hub.attach(channel)

    async def _unsubscribe(self, request: dict[str, Any]) -> None:
        channel = self.channels.get(request.get("chanId"))  # type: ignore[arg-type]
        if channel is None:
            await self._error(10400, "unsubscribe: invalid", request)
            return
        self._drop(channel)
        self.ctx.stats.ws_unsubscriptions += 1
        await self._event({"event": "unsubscribed", "status": "OK", "chanId": channel.chan_id})

    def _drop(self, channel: Channel) -> None:
        self.channels.pop(channel.chan_id, None)
        if self.by_key.get(channel.key) is channel:
            del self.by_key[channel.key]
        self.hub.detach(channel)

    # ---- background -------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        ctx = self.ctx
        interval = ctx.config.ws_heartbeat_seconds
        while not self.closed:
            now = time.monotonic()
            wake = now + interval
            for channel in list(self.channels.values()):
                if channel.stale:
                    continue
                due = channel.last_sent + interval
                if due <= now:
                    if ctx.state.stall(now):
                        due = ctx.state.stall_until
                    else:
                        await self.send_channel(channel, '"hb"')
                        ctx.stats.ws_heartbeats_sent += 1
                        due = channel.last_sent + interval
                wake = min(wake, due)
            await asyncio.sleep(max(wake - time.monotonic(), 0.005))

    async def _firehose(self) -> None:
        """Benchmark mode: a changed candle on every channel, as fast as the socket takes it."""
        ctx = self.ctx
        bump = 0
        prefixes: dict[int, tuple[str, float]] = {}
        while not self.closed:
            mono = time.monotonic()
            paused = ctx.state.maintenance(mono) or ctx.state.stall(mono)
            if not ctx.faults.firehose or not self.channels or paused:
                await asyncio.sleep(0.05)
                continue
            now = ctx.market.now_ms()
            with _corked(self.ws):
                for channel in list(self.channels.values()):
                    if channel.stale:
                        continue
                    prefix = prefixes.get(channel.chan_id)
                    if prefix is None:
                        base = channel.last_row or (align(now, channel.tf), 1.0, 1.0, 1.0, 1.0,
                                                    0.0)
                        prefix = prefixes[channel.chan_id] = (row_json(base[:5])[:-1], base[5])
                    bump += 1
                    # Only the volume changes, so only the volume is formatted per frame.
                    await self.send_channel(channel, f"{prefix[0]},{prefix[1] + bump * 1e-8!r}]")
                    ctx.stats.ws_updates_sent += 1
            await asyncio.sleep(0)


@contextlib.contextmanager
def _corked(ws: ServerConnection) -> Iterator[None]:
    """TCP_CORK on the connection's socket while a round of frames is written (Linux).

    The transport writes each frame at once, one TCP segment each; corked, the kernel queues
    them and sends full segments when the round is done, which is most of a frame's cost.
    """
    sock = ws.transport.get_extra_info("socket") if _TCP_CORK is not None else None
    if sock is None:
        yield
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)


def _wire(ctx: SimContext, rows: list[Ohlcv]) -> str:
    """Rows as JSON, some broken when the `ws_corrupt_rate` fault is on."""
    if not ctx.faults.ws_corrupt_rate:
        return rows_json(rows)
    broken, kinds = corrupt_rows(rows, ctx.faults.ws_corrupt_rate, ctx.rng)
    for kind in kinds:
        ctx.stats.faults_fired["ws_corrupt_row"] += 1
        ctx.stats.faults_fired[f"corrupt_{kind}"] += 1
    return dumps_rows(broken)
