"""GET /candles: one series' candles in a time range, ascending.

Up to 10,000 rows per answer, so the JSON is written directly rather than through a pydantic model
per row (several times faster); `CandlesOut` documents the exact shape in OpenAPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from market_data.api.deps import RequiredSymbol, RequiredTimeframe, StoreDep
from market_data.api.params import bad_parameter, parse_time
from market_data.api.schemas import CandlesOut
from market_data.models import Candle, SeriesKey
from market_data.timeframes import DAY_MS, format_ts, next_open, nominal_ms, now_ms

router = APIRouter(tags=["candles"])

MAX_LIMIT = 10_000
_TIME_HELP = "ISO 8601 (2026-02-05T20:00:00Z, 2026-02-05) or epoch milliseconds"


@router.get(
    "/candles",
    response_model=CandlesOut,
    description=(
        "Candles with start <= ts < end, ascending by open time, at most `limit`. Without `start`"
        " the answer covers the `limit` periods before `end` (default: now, including the"
        " still-open period)."
    ),
)
async def get_candles(
    store: StoreDep,
    symbol: RequiredSymbol,
    timeframe: RequiredTimeframe,
    start: Annotated[str | None, Query(max_length=40, description=_TIME_HELP)] = None,
    end: Annotated[str | None, Query(max_length=40, description=_TIME_HELP)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
) -> Response:
    start_ms = None if start is None else parse_time("start", start)
    end_ms = next_open(now_ms(), timeframe) if end is None else parse_time("end", end)
    if start_ms is None:
        start_ms = max(0, end_ms - limit * nominal_ms(timeframe))
    if end_ms <= start_ms:
        raise bad_parameter("end", "must be after start", end)
    series = SeriesKey(symbol, timeframe)
    # The store may build the rows' JSON itself (PostgreSQL); otherwise it is written here.
    built = await store.candles_json(series, start_ms, end_ms, limit)
    if built is None:
        candles = await store.candles_in_range(series, start_ms, end_ms, limit)
        built = candles_json(candles), len(candles)
    body, count = built
    head = (
        f'{{"symbol":"{symbol}","timeframe":"{timeframe}","start":"{format_ts(start_ms)}",'
        f'"end":"{format_ts(end_ms)}","count":{count},"candles":['
    )
    return Response(head + body + "]}", media_type="application/json")


def candles_json(candles: Sequence[Candle]) -> str:
    """The candles as a JSON array body (without brackets), times as ISO 8601 UTC."""
    days: dict[int, str] = {}
    parts: list[str] = []
    append = parts.append
    for c in candles:
        day, ms_of_day = divmod(c.ts, DAY_MS)
        prefix = days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%dT")
            days[day] = prefix
        seconds = ms_of_day // 1000
        hours, rest = divmod(seconds, 3600)
        append(
            f'{{"ts":"{prefix}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z",'
            f'"open":{float(c.open)!r},"high":{float(c.high)!r},"low":{float(c.low)!r},'
            f'"close":{float(c.close)!r},"volume":{float(c.volume)!r},'
            f'"final":{"true" if c.final else "false"}}}'
        )
    return ",".join(parts)
