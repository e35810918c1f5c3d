"""The shards of one Bitfinex live stream: the initial split of the channels over connections,
channels added (on a connection with room, else a new paced one) and removed (unsubscribed)
while running, moving a channel refused with 10305 (channel limit) to a connection with room,
the series the exchange refused, and closing every socket on stop. Each shard's own loop is in
ws.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from market_data.exchanges.base import ConnectionInfo, Deliver, OnReady
from market_data.exchanges.bitfinex.pacing import ConnectionPacer
from market_data.exchanges.bitfinex.wire import candle_key
from market_data.exchanges.bitfinex.ws import Shard, Subscription, WsOptions
from market_data.models import SeriesKey

# The logger keeps the name it had before the adapter became a package: JSON log lines carry it.
log = logging.getLogger("market_data.exchanges.bitfinex_ws")


class ShardPool:
    """Owns the shards: initial split, moves on 10305, failed series, the stop watcher."""

    def __init__(
        self,
        options: WsOptions,
        subscriptions: list[Subscription],
        deliver: Deliver,
        on_ready: OnReady,
    ) -> None:
        self.options = options
        self.deliver = deliver
        self.on_ready = on_ready
        self.pacer = ConnectionPacer(options.connections_per_minute, options.handshake_penalty)
        self.shards: list[Shard] = []
        self.failed: dict[SeriesKey, str] = {}  # series the exchange refused, and why
        self.closed = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: dict[Shard, asyncio.Task[None]] = {}
        size = max(1, options.max_per_connection)
        for start in range(0, len(subscriptions), size):
            self._new_shard(subscriptions[start : start + size])

    @property
    def connections(self) -> list[ConnectionInfo]:
        return [shard.info for shard in self.shards]

    def start(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Spawn every shard, and a watcher closing their sockets on stop, as tasks of `tg`."""
        self._tg, self._stop = tg, stop
        for shard in self.shards:
            self._spawn(shard)
        tg.create_task(self._close_on_stop(stop), name="ws-stop-watcher")

    async def add(self, channels: Mapping[SeriesKey, str]) -> None:
        """Subscribe more series: on a shard with room, else on a new one (paced like all)."""
        carried = {sub.series for shard in self.shards for sub in shard.subs.values()}
        for series, pair in channels.items():
            if series in carried:
                continue
            self.failed.pop(series, None)  # a re-listed pair gets another chance
            await self._place(Subscription(series, candle_key(pair, series.timeframe)))

    async def remove(self, series: Iterable[SeriesKey]) -> None:
        """Unsubscribe series; a shard left without channels stays open for later ones."""
        for key in series:
            self.failed.pop(key, None)
            for shard in self.shards:
                for sub in list(shard.subs.values()):
                    if sub.series == key:
                        await shard.remove(sub.key)

    async def _place(self, sub: Subscription, origin: Shard | None = None) -> Shard:
        for shard in self.shards:
            if shard is not origin and shard.has_room() and self._alive(shard):
                await shard.add(sub)
                return shard
        shard = self._new_shard([sub])
        if self._tg is not None and self._stop is not None and not self._stop.is_set():
            self._spawn(shard)
        return shard

    def _new_shard(self, subs: list[Subscription]) -> Shard:
        shard = Shard(self, len(self.shards) + 1, subs)
        self.shards.append(shard)
        return shard

    def _spawn(self, shard: Shard) -> None:
        assert self._tg is not None
        assert self._stop is not None
        task = self._tg.create_task(shard.run(self._stop), name=f"ws-shard-{shard.info.id}")
        self._tasks[shard] = task

    def _alive(self, shard: Shard) -> bool:
        """Whether a shard still runs (or will, once started): one whose channels were all
        removed ends at its next disconnect and takes no new channel."""
        task = self._tasks.get(shard)
        return self._tg is None or (task is not None and not task.done())

    async def _close_on_stop(self, stop: asyncio.Event) -> None:
        # `closed` waits for stop: with channels added at run time, no shard running yet (or
        # every shard idle) is not the end of the stream.
        try:
            await stop.wait()
            await asyncio.gather(*(shard.close() for shard in self.shards))
            if self._tasks:  # no shard is spawned once stop is set
                await asyncio.wait(set(self._tasks.values()))
        finally:
            self.closed.set()

    async def relocate(self, sub: Subscription, origin: Shard) -> None:
        """Move a channel refused with 10305 to a shard with room, or to a new one."""
        shard = await self._place(sub, origin)
        log.info("Moved %s to WebSocket connection %d (channel limit)", sub.series, shard.info.id)

    def report_failed(self, sub: Subscription, reason: str) -> None:
        self.failed[sub.series] = reason
        log.error("Subscription to %s refused by the exchange: %s", sub.series, reason)
