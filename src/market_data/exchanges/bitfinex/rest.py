"""Bitfinex REST over httpx, every request through the process's rate limiter.

httpx errors are translated here, once: timeouts and connection failures become
`ExchangeUnavailable`. Retry policy: `RateLimited` is retried by the limiter (penalty box for
everyone); `ExchangeUnavailable` (and an unreadable body) is retried here a few times with
backoff, then raised; `ExchangeRequestError` is never retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from market_data import __version__
from market_data.errors import (
    ExchangeRequestError,
    ExchangeUnavailable,
    MarketDataError,
    PayloadError,
    RateLimited,
    UnknownSymbol,
)
from market_data.exchanges.base import CandlePage
from market_data.exchanges.bitfinex.pairs import pair_for_symbol, parse_pair_list
from market_data.exchanges.bitfinex.wire import (
    CANDLES_PATH,
    MAX_BODY_BYTES,
    PAIR_LIST_PATH,
    REST_MAX_LIMIT,
    candle_key,
    classify_http_error,
    parse_rest_candles,
)
from market_data.lifecycle import Backoff, retry
from market_data.models import SymbolError, canonical_symbol, exchange_pair_map
from market_data.rate_limiter import Priority, RateLimiter
from market_data.timeframes import TimeframeError, now_ms, parse_timeframe

# The logger keeps the name it had before the adapter became a package: JSON log lines carry it.
log = logging.getLogger("market_data.exchanges.bitfinex_rest")

T = TypeVar("T")

OUTCOMES = (
    "ok",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection_error",
    "bad_payload",
)


@dataclass(slots=True)
class RestStats:
    """Read by the metrics collector at scrape time."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    rows_received: int = 0
    rows_rejected: int = 0
    retries: int = 0  # ExchangeUnavailable retries made here (429 retries are the limiter's)
    pairs_listed: int = 0


class BitfinexRest:
    def __init__(
        self,
        base_url: str,
        limiter: RateLimiter,
        *,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        unavailable_attempts: int = 3,
        retry_backoff: float = 2.0,
        max_retry_backoff: float = 30.0,
        pair_list_ttl: float = 3600.0,
        clock_ms: Callable[[], int] = now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        source_address: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.timeout = timeout
        self.unavailable_attempts = max(1, unavailable_attempts)
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.pair_list_ttl = pair_list_ttl
        self._clock_ms = clock_ms
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            headers={"Accept": "application/json", "User-Agent": f"market-data/{__version__}"},
            # BITFINEX_SOURCE_ADDRESS: the exchange's rate limits count per client address.
            transport=httpx.AsyncHTTPTransport(local_address=source_address)
            if source_address
            else None,
        )
        self._pairs: dict[str, str] | None = None  # canonical symbol -> exchange pair id
        self._pairs_loaded = 0.0  # time.monotonic() of the last load
        self._pairs_lock = asyncio.Lock()
        self.stats = RestStats()

    async def __aenter__(self) -> BitfinexRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    close = aclose

    # --- candles -------------------------------------------------------------------------

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
        """Candles of `pair` (the exchange id, e.g. `DOGE:USD`) with start_ms <= MTS <= end_ms.

        Both bounds are inclusive, as on Bitfinex. sort=1 gives the earliest `limit` candles of
        the window, sort=-1 the latest. `now_ms` (default: the wall clock when the answer
        arrives) decides which candles are still open (`final=False`) or in the future.
        """
        try:
            tf = parse_timeframe(timeframe)
            key = candle_key(pair, tf)
            symbol = canonical_symbol(pair)
        except (TimeframeError, SymbolError) as exc:
            raise ExchangeRequestError(f"cannot ask for {pair} {timeframe}: {exc}") from None
        if not 1 <= limit <= REST_MAX_LIMIT:
            raise ExchangeRequestError(f"limit {limit} is outside 1..{REST_MAX_LIMIT}")
        if sort not in (1, -1):
            raise ExchangeRequestError(f"sort must be 1 or -1, not {sort}")
        if not 0 <= start_ms <= end_ms:
            raise ExchangeRequestError(f"bad window: start {start_ms} end {end_ms}")
        path = CANDLES_PATH.format(key=key)
        params = {
            "sort": str(sort),
            "limit": str(limit),
            "start": str(start_ms),
            "end": str(end_ms),
        }

        async def attempt() -> CandlePage:
            body = await self._get(path, params)
            now = now_ms if now_ms is not None else self._clock_ms()
            return parse_rest_candles(body, symbol, tf, now)

        page = await self._with_retries(attempt, priority, f"{symbol}/{tf}")
        self.stats.rows_received += page.raw_count
        if page.rejected_count:
            self.stats.rows_rejected += page.rejected_count
            log.warning(
                "Refused %d of %d rows from Bitfinex for %s/%s; first: %s (%s)",
                page.rejected_count,
                page.raw_count,
                symbol,
                tf,
                page.rejected[0].raw if page.rejected else "?",
                page.rejected[0].reason if page.rejected else "?",
            )
        return page

    # --- pairs ---------------------------------------------------------------------------

    async def fetch_pairs(self, priority: Priority = Priority.URGENT) -> list[str]:
        """The exchange's trading pair ids (`BTCUSD`, `DOGE:USD`, ...)."""

        async def attempt() -> list[str]:
            return parse_pair_list(await self._get(PAIR_LIST_PATH, None))

        pairs = await self._with_retries(attempt, priority, "pair list")
        self.stats.pairs_listed = len(pairs)
        return pairs

    async def refresh_pairs(self) -> dict[str, str]:
        """Reload the pair list now; returns canonical symbol -> pair id."""
        mapping = exchange_pair_map(await self.fetch_pairs())
        self._pairs, self._pairs_loaded = mapping, time.monotonic()
        log.info("Loaded %d Bitfinex trading pairs", len(mapping))
        return mapping

    async def pair_for(self, symbol: str) -> str:
        """The exchange id for a symbol (`DOGEUSD` -> `DOGE:USD`); UnknownSymbol if unlisted.

        The pair list is loaded once and cached; a symbol missing from a list older than
        `pair_list_ttl` seconds triggers one reload (the exchange lists new pairs over time).
        """
        try:
            canonical = canonical_symbol(symbol)
        except SymbolError:
            raise UnknownSymbol(f"{symbol!r} is not a trading pair") from None
        async with self._pairs_lock:
            pairs = self._pairs
            stale = time.monotonic() - self._pairs_loaded > self.pair_list_ttl
            if pairs is None or (canonical not in pairs and stale):
                pairs = await self.refresh_pairs()
        return pair_for_symbol(canonical, pairs)

    # --- plumbing ------------------------------------------------------------------------

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[T]], priority: Priority, what: str
    ) -> T:
        def retrying(exc: BaseException, failures: int, delay: float) -> None:
            self.stats.retries += 1
            log.warning(
                "Bitfinex request for %s failed (%s); retry %d of %d in %.1f s",
                what,
                exc,
                failures,
                self.unavailable_attempts - 1,
                delay,
            )

        try:
            return await retry(
                lambda: self.limiter.call(self._counted(attempt), priority),
                # Plain doubling: the limiter already spaces every request of the process.
                backoff=Backoff(self.retry_backoff, self.max_retry_backoff, jitter=False),
                retry_on=(ExchangeUnavailable, PayloadError),
                attempts=self.unavailable_attempts,
                on_retry=retrying,
                sleep=self._sleep,
            )
        except PayloadError as exc:
            raise ExchangeUnavailable(f"unreadable answer for {what}: {exc}") from None

    def _counted(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        async def run() -> T:
            try:
                result = await attempt()
            except MarketDataError as exc:
                self.stats.requests[_outcome(exc)] += 1
                raise
            self.stats.requests["ok"] += 1
            return result

        return run

    async def _get(self, path: str, params: dict[str, str] | None) -> bytes:
        """GET and return the body of a 200; any other status raises its classified error."""
        url = self.base_url + path
        try:
            response = await self._client.get(url, params=params)
        except httpx.TimeoutException:
            raise _Timeout(f"no answer from Bitfinex within {self.timeout:g} s: {path}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ExchangeRequestError(f"bad URL {url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise _Unreachable(f"cannot reach Bitfinex ({type(exc).__name__}): {path}") from None
        body = response.content
        if len(body) > MAX_BODY_BYTES:
            raise PayloadError(f"answer of {len(body)} bytes is too large")
        if response.status_code != 200:
            error = classify_http_error(response.status_code, body)
            log.debug("GET %s -> HTTP %d: %s", path, response.status_code, error)
            raise error
        return body


class _Timeout(ExchangeUnavailable):
    """Bitfinex did not answer in time."""


class _Unreachable(ExchangeUnavailable):
    """The connection to Bitfinex failed."""


def _outcome(exc: MarketDataError) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, _Timeout):
        return "timeout"
    if isinstance(exc, ExchangeUnavailable):
        return "connection_error" if isinstance(exc, _Unreachable) else "server_error"
    if isinstance(exc, PayloadError):
        return "bad_payload"
    return "client_error"
