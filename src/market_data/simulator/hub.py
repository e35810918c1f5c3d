"""The simulator's live market feed: channels, and the hub that sends each one its changed candle.

The `Hub` follows the trades of every pair some channel listens to and sends each channel its
changed candle; nothing is pushed on period boundaries, exactly as on Bitfinex. Sessions (one per
client connection, `ws.py`) own their channels and put the frames on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

from market_data.simulator.config import SimContext, logger
from market_data.simulator.corrupt import corrupt_rows, dumps_rows
from market_data.simulator.prices import Ohlcv
from market_data.simulator.wire import dumps, row_json, rows_json
from market_data.timeframes import HOUR_MS


class Session(Protocol):
    """What the hub needs of a client connection (`ws.Session`, which imports this module)."""

    channels: dict[int, Channel]
    closed: bool

    async def send_channel(self, channel: Channel, payload: str) -> None: ...

    async def send_info(
        self, text: str, close_code: int | None, close_after: float = 0.0
    ) -> None: ...


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

    async def broadcast(
        self, event: dict[str, Any], *, close_code: int | None = None, close_after: float = 0.0
    ) -> None:
        """`event` to every session; with `close_code`, each is closed `close_after` s later."""
        text = dumps(event)
        sessions = list(self.sessions)
        await asyncio.gather(*(s.send_info(text, close_code, close_after) for s in sessions))

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
            await channel.session.send_channel(channel, wire_rows(ctx, [row])[1:-1])
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


def wire_rows(ctx: SimContext, rows: list[Ohlcv]) -> str:
    """Rows as JSON, some broken when the `ws_corrupt_rate` fault is on."""
    if not ctx.faults.ws_corrupt_rate:
        return rows_json(rows)
    broken, kinds = corrupt_rows(rows, ctx.faults.ws_corrupt_rate, ctx.rng)
    for kind in kinds:
        ctx.stats.faults_fired["ws_corrupt_row"] += 1
        ctx.stats.faults_fired[f"corrupt_{kind}"] += 1
    return dumps_rows(broken)
