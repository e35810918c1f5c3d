"""The rows of one live candle message turned into `Candle`s and refused rows (for the sink's
quarantine). Pure apart from the `on_reject` callback, which the shard uses to count and log."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from market_data.errors import MarketDataError
from market_data.exchanges.bitfinex.wire import CLOCK_SKEW_MS, parse_candle_row
from market_data.models import Candle, RejectedRow, SeriesKey

REJECTED_PER_FRAME = 20  # refused rows kept per message for quarantine; all are counted


def parse_rows(
    rows: Sequence[object],
    series: SeriesKey,
    now_ms: int,
    on_reject: Callable[[SeriesKey, object, Exception], None],
) -> tuple[list[Candle], list[RejectedRow]]:
    """Candles in time order (snapshots come newest first) and the first refused rows."""
    candles: list[Candle] = []
    rejected: list[RejectedRow] = []
    for row in rows:
        try:
            candles.append(parse_candle_row(row, series.symbol, series.timeframe, now_ms))
        except MarketDataError as exc:
            if len(rejected) < REJECTED_PER_FRAME:
                mts = row[0] if isinstance(row, list) and row else None
                rejected.append(
                    RejectedRow(
                        json.dumps(row, default=str)[:500],
                        str(exc),
                        mts if type(mts) is int and 0 <= mts <= now_ms + CLOCK_SKEW_MS else None,
                    )
                )
            on_reject(series, row, exc)
    candles.sort(key=lambda c: c.ts)
    return candles, rejected
