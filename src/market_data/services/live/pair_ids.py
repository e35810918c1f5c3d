"""The exchange's pair ids of the series to stream, retried while the exchange is away."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable

from market_data.errors import ExchangeUnavailable, RateLimited, UnknownSymbol
from market_data.exchanges.base import Exchange
from market_data.lifecycle import Backoff, Stopped, retry
from market_data.models import SeriesKey

# The ingestion's logger: JSON log lines carry its name.
log = logging.getLogger("market_data.services.ws_ingestion")


async def resolve_pairs(
    exchange: Exchange,
    wanted: Iterable[SeriesKey],
    stop: asyncio.Event,
    unknown: dict[str, str],
) -> dict[SeriesKey, str]:
    """Exchange pair ids of native series; unlisted symbols go to `unknown` and are skipped."""
    pairs: dict[SeriesKey, str] = {}
    backoff = Backoff(1.0, 60.0)

    def retrying(exc: BaseException, _failures: int, delay: float) -> None:
        log.warning("Cannot load the pair list (%s); retrying in %.0f s", exc, delay)

    for series in wanted:
        try:
            pairs[series] = await retry(
                functools.partial(exchange.pair_for, series.symbol),
                backoff=backoff,
                stop=stop,
                retry_on=(ExchangeUnavailable, RateLimited),
                on_retry=retrying,
            )
        except UnknownSymbol as exc:
            unknown[series.symbol] = str(exc)
            log.error("Not subscribing %s: %s", series, exc)
        except Stopped:
            break
    return pairs
