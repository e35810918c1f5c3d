"""Shared set-up for the gap, retention and update tests: settings, a REST client that records
what it asked for (the real client, against the simulator), filling from the simulator's truth,
and punching holes into the candles table directly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from market_data.config import Settings, load_settings
from market_data.exchanges.base import CandlePage
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.models import Candle, SeriesKey
from market_data.rate_limiter import Priority, RateLimiter
from market_data.services.gap_repair import GapService, RetryPolicy
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.storage.sql import SqlStore
from market_data.storage.tables import candles as candles_table

NO_RETENTION = {"1m": 0, "5m": 0, "1h": 0, "4h": 0, "1d": 0}


def make_settings(database_url: str, rest_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "bitfinex_rest_url": rest_url,
        "bitfinex_symbols": "BTCUSD",
        "bitfinex_timeframes": "1h",
        "rate_limit_delay": 0,
        "rate_limit_initial_backoff": 0,
        "rate_limit_min_backoff_seconds": 0,
        "rate_limit_max_backoff": 0,
        "gap_repair_max_repairs_per_run": 0,
        "retention_days": dict(NO_RETENTION),
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass(frozen=True, slots=True)
class Call:
    pair: str
    timeframe: str
    start_ms: int
    end_ms: int
    priority: Priority


class RecordingRest(BitfinexRest):
    """The real client; it also remembers every candles request it made."""

    def __init__(self, base_url: str, limiter: RateLimiter, **options: Any) -> None:
        super().__init__(base_url, limiter, **options)
        self.calls: list[Call] = []

    async def fetch_candles(  # type: ignore[override]
        self, pair: str, timeframe: str, start_ms: int, end_ms: int, **kw: Any
    ) -> CandlePage:
        priority = kw.get("priority", Priority.BULK)
        self.calls.append(Call(pair, timeframe, start_ms, end_ms, priority))
        return await super().fetch_candles(pair, timeframe, start_ms, end_ms, **kw)


@dataclass
class Rig:
    settings: Settings
    store: SqlStore
    rest: RecordingRest
    exchange: BitfinexExchange  # the adapter over `rest`, as the services see it
    sink: CandleSink
    gaps: GapService

    async def close(self) -> None:
        await self.rest.aclose()


def rig(
    settings: Settings,
    store: SqlStore,
    *,
    clock: Callable[[], int] | None = None,
    policy: RetryPolicy | None = None,
) -> Rig:
    limiter = RateLimiter.from_settings(settings)
    # One attempt per call: the repair's own backoff is what the tests look at.
    rest = RecordingRest(
        settings.bitfinex_rest_url, limiter, unavailable_attempts=1, retry_backoff=0
    )
    sink = CandleSink(store, settings)
    extra: dict[str, Any] = {}
    if clock is not None:
        extra["clock"] = clock
    exchange = BitfinexExchange(rest, settings.bitfinex_ws_url)
    gaps = GapService(settings, store, exchange, sink, policy=policy, **extra)
    return Rig(settings, store, rest, exchange, sink, gaps)


async def fill(
    sink: CandleSink, sim: Simulator, symbol: str, tf: str, start: int, end: int
) -> list[Candle]:
    truth = sim.market.truth(symbol, tf, start, end)
    await sink.write(truth, "backfill")
    return truth


async def punch(store: SqlStore, series: SeriesKey, start: int, end: int) -> int:
    """Delete stored candles in [start, end) behind the store's back (as an operator might)."""
    t = candles_table
    async with store.engine.begin() as conn:
        result = await conn.execute(
            t.delete().where(
                t.c.exchange == "bitfinex",
                t.c.symbol == series.symbol,
                t.c.timeframe == series.timeframe,
                t.c.ts >= start,
                t.c.ts < end,
            )
        )
    return int(result.rowcount)


def values(candles: list[Candle]) -> list[tuple[int, float, float, float, float, float]]:
    return [(c.ts, c.open, c.high, c.low, c.close, c.volume) for c in candles]


def candles_requests(sim: Simulator) -> int:
    return sim.stats.rest_requests("candles_hist")


def rows_before(truth: list[Candle], cutoff: int) -> int:
    return sum(1 for c in truth if c.ts < cutoff)


def messages(records: list[Any]) -> list[str]:
    return [r.getMessage() for r in records]
