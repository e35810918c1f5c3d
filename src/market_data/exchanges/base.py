"""The exchange interface: what the services need from any exchange, and the values it returns.

An exchange adapter (`exchanges/bitfinex/` is the one we ship) implements `Exchange`:

- `pair_for(symbol)`: the exchange's id for a configured symbol, or `UnknownSymbol`;
- `list_pairs()`: every pair id the exchange lists now (read afresh, for BITFINEX_SYMBOLS
  patterns);
- `fetch_candles(...)`: one page of candles of a time window (REST), as a `CandlePage`;
- `live_stream(...)`: the live candles of many series over sharded connections, delivered as
  `CandleFrame`s, with per-connection state (`ConnectionInfo`) for /status; channels are added
  and removed while it runs (`LiveStream.add` / `remove`);
- `limits`: page size, channels per connection, new connections per minute.

Errors raised are the exchange's errors from `errors.py` (`RateLimited`, `ExchangeUnavailable`,
`ExchangeRequestError`, `UnknownSymbol`, `PayloadError`), whatever the venue's wire says. Rows an
exchange refuses to turn into candles travel as `models.RejectedRow` for the sink's quarantine.
Services import this module (and the models), never an adapter, so a second exchange plugs in by
implementing this protocol; the daemon picks the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from market_data.models import Candle, RejectedRow, SeriesKey
from market_data.rate_limiter import Priority, RateLimiter


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    """What the exchange allows; the services size their work by it."""

    page_size: int  # candles per REST request at most
    channels_per_connection: int  # live channels one connection may carry
    connections_per_minute: int  # new live connections we open per minute, at most


@dataclass(frozen=True, slots=True)
class CandlePage:
    """One answer: valid candles (canonical symbol and timeframe), rows received, rows refused.

    `rejected` keeps the first refused rows with their text (bounded), `rejected_count` counts
    all of them. `min_ts`/`max_ts` span every row with a usable open time, refused ones
    included, so a pager can move on past a page whose rows were all refused.
    """

    candles: list[Candle]
    raw_count: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_count: int = 0
    min_ts: int | None = None
    max_ts: int | None = None


@dataclass(frozen=True, slots=True)
class CandleFrame:
    """Candles of one live message, ascending by time, with when the connection received it."""

    series: SeriesKey
    candles: tuple[Candle, ...]
    snapshot: bool
    received_ms: int  # the exchange's clock (StreamOptions.clock_ms), epoch ms
    received_at: float  # time.monotonic(), for latency
    shard_id: int
    rejected: tuple[RejectedRow, ...] = ()  # rows the parser refused (the first few)


@dataclass(slots=True)
class ConnectionInfo:
    """One live connection as /status and /metrics show it."""

    id: int
    state: str = "connecting"  # connecting, subscribed, paused, backoff, closed
    subscriptions: list[str] = field(default_factory=list)
    last_message_ms: int | None = None
    connected_since_ms: int | None = None
    reconnects: int = 0
    messages: int = 0
    rejected_rows: int = 0  # candle rows the parser refused
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How the live stream behaves; the daemon's settings decide, the adapter obeys."""

    clock_ms: Callable[[], int]  # the exchange's time; frames are stamped with it
    max_per_connection: int
    heartbeat_timeout: float  # silence after which a connection is dropped and reopened
    backoff_initial: float
    backoff_max: float
    connections_per_minute: int  # at most the exchange's limits.connections_per_minute
    maintenance_timeout: float = 180.0  # longest pause the exchange may announce
    healthy_after: float = 30.0  # a connection up this long resets the backoff


# Called with each live message; may block (backpressure on the connection).
Deliver = Callable[[CandleFrame], Awaitable[None]]
# Called with a connection id and the series (re)subscribed on it: their data may have a hole.
OnReady = Callable[[int, list[SeriesKey]], None]


class LiveStream(Protocol):
    """Sharded live connections for a set of series."""

    closed: asyncio.Event  # set once every connection has ended after stop

    @property
    def connections(self) -> list[ConnectionInfo]: ...

    @property
    def failed(self) -> dict[SeriesKey, str]:
        """Series the exchange refused to stream, and why."""

    def start(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Run every connection as a task of `tg` until `stop` is set (with no channel at all
        too: channels may be added later); `closed` is set only after `stop`."""

    async def add(self, channels: Mapping[SeriesKey, str]) -> None:
        """Stream more series (series -> pair id), on connections with room or new ones."""

    async def remove(self, series: Iterable[SeriesKey]) -> None:
        """Stop streaming these series (unsubscribe); unknown ones are ignored."""


class Exchange(Protocol):
    """What the services need from an exchange (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> ExchangeLimits: ...

    @property
    def limiter(self) -> RateLimiter:
        """The process's REST limiter every request of this exchange goes through."""

    async def pair_for(self, symbol: str) -> str:
        """The exchange's id for a canonical symbol (`DOGEUSD` -> `DOGE:USD`)."""

    async def list_pairs(self) -> list[str]:
        """Every trading pair id the exchange lists now, read afresh (not a cached list)."""

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
        """Candles with start_ms <= open time <= end_ms (both inclusive), at most `limit`:
        the earliest (`sort=1`) or the latest (`sort=-1`). `now_ms` decides which candles are
        still open (`final=False`)."""

    def live_stream(
        self,
        channels: Mapping[SeriesKey, str],
        deliver: Deliver,
        on_ready: OnReady,
        options: StreamOptions,
    ) -> LiveStream:
        """A stream of the given series (series -> pair id), not started yet."""

    async def aclose(self) -> None: ...
