"""The exchange seam: services work with any `exchanges.base.Exchange`, not just Bitfinex.

`MarketExchange` is a second venue written against the interface only: it answers from the
simulator's market directly (no wire, no Bitfinex parser) and has limits of its own (pages of 7
candles). The real backfill, update and gap services run on it with a real database; nothing in
`services/` knows which exchange they talk to.
"""

from __future__ import annotations

from collections.abc import Mapping

from market_data.config import Settings, load_settings
from market_data.errors import ExchangeRequestError, UnknownSymbol
from market_data.exchanges.base import (
    CandlePage,
    Deliver,
    Exchange,
    ExchangeLimits,
    LiveStream,
    OnReady,
    StreamOptions,
)
from market_data.models import SeriesKey, SymbolError, canonical_symbol
from market_data.rate_limiter import Priority, RateLimiter
from market_data.services.backfill import BackfillService
from market_data.services.gap_repair import GapService
from market_data.services.sink import CandleSink
from market_data.services.update import UpdateService
from market_data.simulator import Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, align, next_open
from tests.integration.gap_support import punch
from tests.plugins.sim import SimulatorFactory

PAGE = 7


class MarketExchange:
    """A second exchange: the simulator's market behind the interface, 7 candles a page."""

    def __init__(self, sim: Simulator) -> None:
        self._market = sim.market
        self._limiter = RateLimiter(0, 0, 0, 0, 0)
        self.requests: list[tuple[str, int, int, int]] = []

    @property
    def name(self) -> str:
        return "market"

    @property
    def limits(self) -> ExchangeLimits:
        return ExchangeLimits(page_size=PAGE, channels_per_connection=1, connections_per_minute=1)

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    async def pair_for(self, symbol: str) -> str:
        listed = {canonical_symbol(p): p for p in self._market.exchange_pairs()}
        try:
            return listed[canonical_symbol(symbol)]
        except (KeyError, SymbolError):
            raise UnknownSymbol(f"not listed: {symbol}") from None

    async def list_pairs(self) -> list[str]:
        return list(self._market.exchange_pairs())

    async def fetch_candles(
        self,
        pair: str,
        timeframe: str,
        start_ms: int,
        end_ms: int,
        *,
        limit: int,
        sort: int = 1,
        priority: Priority = Priority.BULK,
        now_ms: int | None = None,
    ) -> CandlePage:
        if limit > PAGE:
            raise ExchangeRequestError(f"limit {limit} exceeds this exchange's page of {PAGE}")
        self.requests.append((timeframe, start_ms, end_ms, limit))
        truth = self._market.truth(canonical_symbol(pair), timeframe, start_ms, end_ms + 1)
        rows = truth[:limit] if sort == 1 else truth[::-1][:limit]
        return CandlePage(
            rows,
            len(rows),
            min_ts=min((c.ts for c in rows), default=None),
            max_ts=max((c.ts for c in rows), default=None),
        )

    def live_stream(
        self,
        channels: Mapping[SeriesKey, str],
        deliver: Deliver,
        on_ready: OnReady,
        options: StreamOptions,
    ) -> LiveStream:
        raise NotImplementedError("this venue has no live stream")

    async def aclose(self) -> None:
        return None


def settings_for(database_url: str, sim: Simulator) -> Settings:
    return load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_rest_url=sim.rest_url,
        bitfinex_symbols="BTCUSD",
        bitfinex_timeframes="1h,4h",
        backfill_days=2,
        rate_limit_delay=0,
        gap_repair_max_repairs_per_run=0,
    )


async def test_services_run_on_a_second_exchange(
    database_url: str, store: SqlStore, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory()
    settings = settings_for(database_url, sim)
    venue = MarketExchange(sim)
    exchange: Exchange = venue  # the services' view of it
    sink = CandleSink(store, settings)
    hour = SeriesKey("BTCUSD", "1h")

    report = await BackfillService(settings, store, exchange, sink).run()
    assert report.ok, report
    now = sim.market.now_ms()
    start = align(now - 2 * 24 * HOUR_MS, "4h")
    truth = sim.market.truth("BTCUSD", "1h", start, align(now, "1h"))
    stored = await store.candles_in_range(hour, start, align(now, "1h"))
    assert [(c.ts, c.close) for c in stored] == [(c.ts, c.close) for c in truth]
    # Paged by this exchange's own limit, never Bitfinex's 10,000.
    assert {limit for *_, limit in venue.requests} == {PAGE}
    assert len(venue.requests) >= len(truth) // PAGE
    # The derived 4h series is built from the 1h one through the sink.
    assert await store.candles_in_range(SeriesKey("BTCUSD", "4h"), start, now)

    # A hole is detected and repaired through the same interface.
    hole = (truth[10].ts, next_open(truth[13].ts, "1h"))
    await punch(store, hour, *hole)
    gaps = GapService(settings, store, exchange, sink)
    detected = await gaps.detect(full=True)
    assert [(g.gap_start, g.gap_end) for g in detected.new_gaps if g.timeframe == "1h"] == [hole]
    repaired = await gaps.repair()
    assert repaired.failures == 0
    refilled = await store.candles_in_range(hour, *hole)
    assert [c.ts for c in refilled] == [c.ts for c in truth[10:14]]

    # The update loop asks for the newest candles, within the page size.
    venue.requests.clear()
    assert await UpdateService(settings, store, exchange, sink).run_once() >= 0
    assert venue.requests
    assert all(limit <= PAGE for *_, limit in venue.requests)
