"""The shards of one Bitfinex live stream: the initial split of the channels over connections,
moving a channel refused with 10305 (channel limit) to a connection with room, the series the
exchange refused, and closing every socket on stop. Each shard's own loop is in ws.py."""

from __future__ import annotations

import asyncio
import logging

from market_data.exchanges.base import ConnectionInfo, Deliver, OnReady
from market_data.exchanges.bitfinex.pacing import ConnectionPacer
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
        self._live = 0
        size = max(1, options.max_per_connection)
        for start in range(0, len(subscriptions), size):
            self._new_shard(subscriptions[start : start + size])

    @property
    def connections(self) -> list[ConnectionInfo]:
        return [shard.info for shard in self.shards]

    def start(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Spawn every shard, and a watcher closing their sockets on stop, as tasks of `tg`."""
        self._tg, self._stop = tg, stop
        if not self.shards:
            self.closed.set()
            return
        for shard in self.shards:
            self._spawn(shard)
        tg.create_task(self._close_on_stop(stop), name="ws-stop-watcher")

    def _new_shard(self, subs: list[Subscription]) -> Shard:
        shard = Shard(self, len(self.shards) + 1, subs)
        self.shards.append(shard)
        return shard

    def _spawn(self, shard: Shard) -> None:
        assert self._tg is not None
        assert self._stop is not None
        self._live += 1
        task = self._tg.create_task(shard.run(self._stop), name=f"ws-shard-{shard.info.id}")
        task.add_done_callback(self._shard_done)

    def _shard_done(self, _task: asyncio.Task[None]) -> None:
        self._live -= 1
        if self._live == 0:
            self.closed.set()

    async def _close_on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.gather(*(shard.close() for shard in self.shards))

    async def relocate(self, sub: Subscription, origin: Shard) -> None:
        """Move a channel refused with 10305 to a shard with room, or to a new one."""
        for shard in self.shards:
            if shard is not origin and shard.has_room():
                log.info("Moving %s to WebSocket connection %d", sub.series, shard.info.id)
                await shard.add(sub)
                return
        shard = self._new_shard([sub])
        log.info(
            "Opening WebSocket connection %d for %s (channel limit)", shard.info.id, sub.series
        )
        if self._tg is not None and self._stop is not None and not self._stop.is_set():
            self._spawn(shard)

    def report_failed(self, sub: Subscription, reason: str) -> None:
        self.failed[sub.series] = reason
        log.error("Subscription to %s refused by the exchange: %s", sub.series, reason)
