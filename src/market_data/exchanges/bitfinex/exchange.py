"""Bitfinex behind the exchange interface (`exchanges.base.Exchange`): candle pages over REST
(rest.py, through the process's rate limiter) and live candles over WebSocket shards (pool.py)."""

from __future__ import annotations

from collections.abc import Mapping

from market_data.exchanges.base import (
    CandlePage,
    Deliver,
    ExchangeLimits,
    OnReady,
    StreamOptions,
)
from market_data.exchanges.bitfinex.pool import ShardPool
from market_data.exchanges.bitfinex.rest import BitfinexRest, RestStats
from market_data.exchanges.bitfinex.wire import (
    REST_MAX_LIMIT,
    WS_CONNECTIONS_PER_MINUTE,
    WS_MAX_CHANNELS,
    candle_key,
)
from market_data.exchanges.bitfinex.ws import Subscription, WsOptions
from market_data.models import EXCHANGE, SeriesKey
from market_data.rate_limiter import Priority, RateLimiter

LIMITS = ExchangeLimits(
    page_size=REST_MAX_LIMIT,
    channels_per_connection=WS_MAX_CHANNELS,
    connections_per_minute=WS_CONNECTIONS_PER_MINUTE,
)


class BitfinexExchange:
    """The Bitfinex adapter the daemon hands to the services."""

    def __init__(self, rest: BitfinexRest, ws_url: str, source_address: str | None = None) -> None:
        self.rest = rest
        self.ws_url = ws_url
        self.source_address = source_address  # BITFINEX_SOURCE_ADDRESS: the WebSocket's too

    @property
    def name(self) -> str:
        return EXCHANGE

    @property
    def limits(self) -> ExchangeLimits:
        return LIMITS

    @property
    def limiter(self) -> RateLimiter:
        return self.rest.limiter

    @property
    def stats(self) -> RestStats:
        return self.rest.stats

    async def pair_for(self, symbol: str) -> str:
        return await self.rest.pair_for(symbol)

    async def list_pairs(self) -> list[str]:
        # Also renews the cache `pair_for` reads, so a newly listed pair resolves at once.
        return list((await self.rest.refresh_pairs()).values())

    async def fetch_candles(
        self,
        pair: str,
        timeframe: str,
        start_ms: int,
        end_ms: int,
        *,
        limit: int = REST_MAX_LIMIT,
        sort: int = 1,
        priority: Priority = Priority.BULK,
        now_ms: int | None = None,
    ) -> CandlePage:
        return await self.rest.fetch_candles(
            pair,
            timeframe,
            start_ms,
            end_ms,
            limit=limit,
            sort=sort,
            priority=priority,
            now_ms=now_ms,
        )

    def live_stream(
        self,
        channels: Mapping[SeriesKey, str],
        deliver: Deliver,
        on_ready: OnReady,
        options: StreamOptions,
    ) -> ShardPool:
        subscriptions = [
            Subscription(series, candle_key(pair, series.timeframe))
            for series, pair in channels.items()
        ]
        ws_options = WsOptions(
            url=self.ws_url,
            source_address=self.source_address,
            clock_ms=options.clock_ms,
            max_per_connection=options.max_per_connection,
            heartbeat_timeout=options.heartbeat_timeout,
            backoff_initial=options.backoff_initial,
            backoff_max=options.backoff_max,
            maintenance_timeout=options.maintenance_timeout,
            healthy_after=options.healthy_after,
            connections_per_minute=options.connections_per_minute,
        )
        return ShardPool(ws_options, subscriptions, deliver, on_ready)

    async def aclose(self) -> None:
        await self.rest.aclose()
