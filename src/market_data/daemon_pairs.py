"""The daemon's part in BITFINEX_SYMBOLS patterns: read the exchange's pair list at start (the
active symbols; stored ones no longer listed become `delisted`), and again in the `pair_refresh`
loop (daily, and when a WebSocket connection reconnects): newly listed pairs are subscribed and
backfilled (the backfill records the range before their listing as empty), vanished ones
unsubscribed and marked delisted, each logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from market_data.daemon_startup import backfill_until_done
from market_data.daemon_state import RuntimeState
from market_data.exchanges.base import Exchange
from market_data.services.backfill import BackfillService, ItemClaim
from market_data.services.universe import SeriesUniverse, UniverseChange
from market_data.storage.base import Store

# These are the daemon's own log lines (operators filter on its logger).
log = logging.getLogger("market_data.daemon")

PAIR_REFRESH_S = 86_400.0  # the exchange lists and delists pairs rarely; reconnects also refresh


class _Running(Protocol):
    """What of the daemon the refresh uses: its state and stop event, how it claims backfill
    items among several daemons, and how it streams what the universe (and the cluster) say."""

    state: RuntimeState
    stop: asyncio.Event

    @property
    def backfill_claim(self) -> ItemClaim | None: ...

    async def restream(self) -> None: ...


class PairRefresh:
    def __init__(
        self,
        universe: SeriesUniverse,
        exchange: Exchange,
        store: Store,
        backfill: BackfillService,
        daemon: _Running,
    ) -> None:
        self._universe = universe
        self._exchange = exchange
        self._store = store
        self._backfill = backfill
        self._daemon = daemon

    async def load(self) -> None:
        """At start: the pair list decides the active symbols; stored series the patterns
        match but the exchange no longer lists are delisted."""
        universe = self._universe
        universe.refresh(await self._exchange.list_pairs())
        stored = {s.symbol for s in await self._store.series_stats()}
        delisted = universe.note_stored(sorted(stored))
        log.info(
            "Symbols from the exchange's pair list: %d active, %d delisted%s",
            len(universe.symbols),
            len(delisted),
            f" ({', '.join(delisted[:20])})" if delisted else "",
        )
        await self._daemon.restream()

    async def refresh(self) -> UniverseChange:
        """Read the pair list again: stream and backfill new pairs, drop delisted ones."""
        universe = self._universe
        change = universe.refresh(await self._exchange.list_pairs())
        if change.removed:
            log.warning(
                "Delisted by the exchange, no longer streamed or fetched (data kept): %s",
                ", ".join(change.removed),
            )
        if change.added:
            log.info("Newly listed, streaming and backfilling: %s", ", ".join(change.added))
        if change:
            await self._daemon.restream()
        if change.added:
            added = set(change.added)
            await backfill_until_done(
                self._backfill,
                self._daemon.state,
                self._daemon.stop,
                what="Backfill of newly listed pairs",
                series=[k for k in universe.all_series() if k.symbol in added],
                claim=self._daemon.backfill_claim,
            )
        return change
