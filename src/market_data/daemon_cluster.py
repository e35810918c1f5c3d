"""The daemon's part in a cluster (several daemons on one PostgreSQL database; on SQLite, a
cluster of one): its member, the `cluster_heartbeat` loop, and the hooks the work uses.

- `cluster_heartbeat` (every LEASE_TTL_SECONDS / 3): renew this member's row, leases and claims,
  close the jobs of members whose heartbeat expired, and hold this member's share of the live
  channels (`wanted_series()` is what the WebSocket ingestion should stream).
- `led(name, cycle)`: a loop that runs once per cycle for the whole cluster, on the holder of
  its lease (gap detection, retention, update); the others' cycles say who holds it.
- `backfill_item(...)` and `gap_repair(...)`: claim a work item, so members split it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from market_data.config import Settings
from market_data.lifecycle import until_stopped
from market_data.models import SeriesKey
from market_data.scheduler import PeriodicLoop
from market_data.services.cluster import (
    BACKFILL_WORK,
    GAP_REPAIR_WORK,
    ClusterMember,
    ClusterState,
    channel_name,
    series_key,
)
from market_data.services.live.ingestion import WsIngestion
from market_data.services.universe import SeriesUniverse
from market_data.storage.base import ClusterStore

log = logging.getLogger("market_data.daemon")

HEARTBEAT_LOOP = "cluster_heartbeat"
# The loops one member runs for all: their work is about the whole database, not a share.
LED_LOOPS = frozenset({"gap_detection", "cleanup", "update"})

ChannelsHook = Callable[[set[SeriesKey]], None]
BACKFILL_DONE_KEEP_S = 900.0


class ClusterDuty:
    def __init__(self, settings: Settings, store: ClusterStore) -> None:
        self.settings = settings
        self.member = ClusterMember(store, settings.daemon_id, float(settings.lease_ttl_seconds))
        # The live channels of the whole cluster: every native series (derived timeframes are
        # built from their sources, never streamed).
        live = settings.ws_ingestion_enabled
        self.channels = [channel_name(s) for s in settings.native_series()] if live else []
        self._on_channels: ChannelsHook | None = None
        self._announced: set[SeriesKey] | None = None

    @property
    def shared(self) -> bool:
        """Several daemons may share the database (PostgreSQL): channels and work are split.
        On SQLite the file lock makes this daemon the only one: it streams and does all."""
        return not self.settings.is_sqlite

    @property
    def state(self) -> ClusterState:
        return self.member.state

    def on_channels(self, hook: ChannelsHook) -> None:
        """Call `hook(series)` whenever the set of series this member should stream changes
        (e.g. `WsIngestion.set_channels`)."""
        self._on_channels = hook
        self._announced = None

    def set_channels(self, series: list[SeriesKey]) -> None:
        """The live channels of the whole cluster (they follow the pair list); the next
        heartbeat cycle spreads them."""
        if self.settings.ws_ingestion_enabled:
            self.channels = [channel_name(s) for s in series]

    def wanted_series(self) -> set[SeriesKey]:
        """The series this member should stream now (none while it is fenced)."""
        return self.member.owned_series()

    def loop(self) -> PeriodicLoop:
        interval = self.settings.lease_ttl_seconds / 3
        return PeriodicLoop(HEARTBEAT_LOOP, self.cycle, interval, initial_delay=0.0)

    async def cycle(self) -> str:
        member = self.member
        # Each step bounded: a hung database call must not keep this cycle from telling the
        # stream that the member fenced itself (a TTL after its last heartbeat).
        bound = self.settings.lease_ttl_seconds / 2
        try:
            await asyncio.wait_for(member.heartbeat(), bound)
            await asyncio.wait_for(member.fail_dead_members_jobs(), bound)
            owned = await asyncio.wait_for(member.sync_channels(self.channels), bound)
        finally:
            # Also after a failed heartbeat: a fenced member must stop streaming.
            self._announce()
        alive = sum(1 for m in member.state.members if m.alive)
        return f"{alive} live member(s); holds {len(owned)} of {len(self.channels)} channels"

    def _announce(self) -> None:
        wanted = self.wanted_series()
        if self._on_channels is not None and wanted != self._announced:
            self._announced = wanted
            self._on_channels(wanted)

    def led(
        self, name: str, cycle: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[object]]:
        return self.member.led(name, cycle)

    # -- claims: members split the work items ---------------------------------------------------

    def backfill_item(
        self, series: SeriesKey, stage: str, start_ms: int, end_ms: int
    ) -> AbstractAsyncContextManager[bool | None]:
        """`async with duty.backfill_item(s, stage, a, b) as mine:` walk the item when `mine`;
        None: another member holds it now (the backfill asks again until it is done, so an item
        whose holder died is taken over).

        The key is the series and the stage, not the window (whose end is each daemon's own
        "now"), so daemons started apart still split the same items. A finished item is left
        alone for BACKFILL_DONE_KEEP_S: a daemon reaching it later skips it; after that (a
        restart) it is claimed again and re-planned, so only what is missing by then is
        fetched (the WebSocket catch-up covers a shorter outage meanwhile)."""
        del start_ms, end_ms  # the claimer re-plans the item's windows from the store
        key = f"{series_key(series)}/{stage}"
        return self.member.claimed_or_busy(BACKFILL_WORK, key, BACKFILL_DONE_KEEP_S)

    def gap_repair(self, series: SeriesKey) -> AbstractAsyncContextManager[bool]:
        """`async with duty.gap_repair(series) as mine:` repair the series' gaps when `mine`
        (free again as soon as it is done: the next run may find new gaps)."""
        return self.member.claimed(GAP_REPAIR_WORK, series_key(series), keep_s=0)

    # -- stopping ------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Give up every lease at once so the others take over without waiting a TTL."""
        await self.member.leave()
        log.info("Left the cluster as %s", self.member.id)


class LiveChannels:
    """Which series the WebSocket ingestion streams: what the universe lists, and in a
    cluster only this member's share of it, followed as the heartbeat moves the share."""

    def __init__(self, ws: WsIngestion | None, universe: SeriesUniverse, duty: ClusterDuty) -> None:
        self._ws = ws
        self._universe = universe
        self._duty = duty
        self._changed = asyncio.Event()
        if ws is not None and duty.shared:
            duty.on_channels(lambda _: self._changed.set())

    async def restream(self) -> None:
        if self._ws is None:
            return
        natives = self._universe.native_series()
        if self._duty.shared:
            self._duty.set_channels(natives)
            owned = self._duty.wanted_series()
            natives = [s for s in natives if s in owned]
        await self._ws.set_series(natives)

    async def follow(self, stop: asyncio.Event) -> None:
        """Apart from the heartbeat, so a slow subscribe never delays a lease renewal."""
        while not stop.is_set():
            await until_stopped(stop, self._changed.wait())
            self._changed.clear()
            if not stop.is_set():
                await self.restream()
