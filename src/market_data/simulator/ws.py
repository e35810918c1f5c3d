"""The WebSocket side of the simulator: `/ws/2` with candle channels (bitfinex-api.md §4).

A `Session` is one client connection: its channels, flags and heartbeats, and its requests
(subscribe, unsubscribe, conf, ping). The channels' data comes from the `Hub` (`hub.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from market_data.simulator.config import SimContext, logger
from market_data.simulator.hub import Channel, Hub, wire_rows
from market_data.simulator.rest import SERVED_TIMEFRAMES
from market_data.simulator.wire import dumps, row_json
from market_data.timeframes import align, from_exchange

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
        self._leaving: asyncio.Task[None] | None = None  # the close due after 20051

    async def run(self) -> None:
        ctx = self.ctx
        self.hub.sessions.add(self)
        ctx.stats.ws_opened += 1
        ctx.stats.ws_active += 1
        status = 0 if ctx.state.maintenance(time.monotonic()) else 1
        info = {
            "event": "info",
            "version": 2,
            "serverId": str(uuid.uuid4()),
            "platform": {"status": status},
        }
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
            if self._leaving is not None and self._leaving is not asyncio.current_task():
                self._leaving.cancel()
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

    async def send_info(self, text: str, close_code: int | None, close_after: float = 0.0) -> None:
        await self._send(text)
        if close_code is None or self.closed:
            return
        if close_after > 0:
            # The session goes on meanwhile; a client that closes first ends it sooner.
            self._leaving = asyncio.create_task(
                self._close_later(close_code, close_after), name="sim-ws-leaving"
            )
        else:
            await self._close(close_code)

    async def _close_later(self, code: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._close(code)

    async def _close(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(code, "restart")

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
            await self._event(
                {"event": "pong", "ts": int(time.time() * 1000), "cid": request.get("cid")}
            )
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
        channel = Channel(self.hub.next_chan_id(), key, index, tf, self, last_sent=time.monotonic())
        self.channels[channel.chan_id] = channel
        self.by_key[key] = channel
        ack: dict[str, Any] = {
            "event": "subscribed",
            "channel": "candles",
            "chanId": channel.chan_id,
            "key": key,
        }
        if "subId" in request:
            ack["subId"] = request["subId"]
        await self._event(ack)
        now = ctx.market.now_ms()
        rows = ctx.market.select(
            index, tf, 0, now, now, limit=ctx.config.ws_snapshot_length, ascending=False
        )
        channel.last_row = ctx.market.current(index, tf, now)
        await self.send_channel(channel, wire_rows(ctx, rows))
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
                        base = channel.last_row or (align(now, channel.tf), 1.0, 1.0, 1.0, 1.0, 0.0)
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
