"""GET /candles: one series' candles in a time range, ascending, as JSON or CSV, streamed.

The body is written chunk by chunk as the store reads it (keyset pages), so an answer never sits
in memory whole. The first chunk is read before the answer starts, so a bad request or an
unreachable database still gets its 422 or 503; a failure after that cuts the answer short
(the client sees an incomplete body, never a complete-looking wrong one).

JSON keeps its documented shape (`CandlesOut`, up to 10,000 rows); `count` is written after the
candles, once known. CSV (`format=csv`) may be longer, up to 1,000,000 rows: it is what scripts
download, and streaming keeps the cost per request at one chunk however long it is. Rows are
written directly rather than through a pydantic model per row (several times faster).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from market_data.api.deps import RequiredSymbol, RequiredTimeframe, StoreDep
from market_data.api.params import TimeQuery, bad_parameter, parse_time
from market_data.api.schemas import CandlesOut
from market_data.errors import MarketDataError
from market_data.export.options import Timestamps
from market_data.models import Candle, SeriesKey
from market_data.storage.base import CandleColumns, Store
from market_data.timeframes import DAY_MS, format_ts, next_open, nominal_ms, now_ms

router = APIRouter(tags=["candles"])
log = logging.getLogger("market_data.api")

MAX_LIMIT = 10_000  # JSON
MAX_CSV_LIMIT = 1_000_000
DEFAULT_LIMIT = 1000
JSON_CHUNK_ROWS = 5_000
CSV_CHUNK_ROWS = 50_000


class CandleFormat(StrEnum):
    json = "json"
    csv = "csv"


@router.get(
    "/candles",
    response_model=CandlesOut,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    description=(
        "Candles with start <= ts < end, ascending by open time, at most `limit`. Without `start`"
        " the answer covers the `limit` periods before `end` (default: now, including the"
        " still-open period). `format=csv` gives the columns symbol, timeframe, ts, open, high,"
        " low, close, volume (ts ISO 8601 UTC, or epoch ms with `timestamps=ms`). Streamed."
    ),
)
async def get_candles(
    store: StoreDep,
    symbol: RequiredSymbol,
    timeframe: RequiredTimeframe,
    start: TimeQuery = None,
    end: TimeQuery = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_CSV_LIMIT,
            description=f"at most {MAX_LIMIT:,} rows for JSON, {MAX_CSV_LIMIT:,} for CSV",
        ),
    ] = DEFAULT_LIMIT,
    fmt: Annotated[CandleFormat, Query(alias="format")] = CandleFormat.json,
    timestamps: Annotated[
        Timestamps,
        Query(
            description="CSV times: iso (2026-02-05T20:00:00Z) or ms (epoch milliseconds)",
        ),
    ] = Timestamps.iso,
) -> Response:
    if fmt is CandleFormat.json and limit > MAX_LIMIT:
        raise bad_parameter(
            "limit", f"at most {MAX_LIMIT} for JSON (format=csv allows more)", limit
        )
    if fmt is CandleFormat.json and timestamps is not Timestamps.iso:
        raise bad_parameter(
            "timestamps", "JSON times are ISO 8601; ms is for format=csv", timestamps.value
        )
    start_ms = None if start is None else parse_time("start", start)
    end_ms = next_open(now_ms(), timeframe) if end is None else parse_time("end", end)
    if start_ms is None:
        start_ms = max(0, end_ms - limit * nominal_ms(timeframe))
    if end_ms <= start_ms:
        raise bad_parameter("end", "must be after start", end)
    series = SeriesKey(symbol, timeframe)
    if fmt is CandleFormat.csv:
        return await _csv(store, series, start_ms, end_ms, limit, timestamps)
    head = (
        f'{{"symbol":"{symbol}","timeframe":"{timeframe}","start":"{format_ts(start_ms)}",'
        f'"end":"{format_ts(end_ms)}","candles":['
    )
    chunks = _json_chunks(store, series, start_ms, end_ms, limit)
    first = await anext(chunks, None)  # errors here still get their status code

    async def body() -> AsyncIterator[str]:
        yield head
        count = 0
        try:
            if first is not None:
                yield first[0]
                count = first[1]
            async for text, n in chunks:
                yield "," + text
                count += n
        except MarketDataError:
            log.warning("API /candles: the store failed mid-answer; the answer is cut short")
            raise
        yield f'],"count":{count}}}'

    return StreamingResponse(body(), media_type="application/json")


async def _csv(
    store: Store,
    series: SeriesKey,
    start_ms: int,
    end_ms: int,
    limit: int,
    timestamps: Timestamps,
) -> Response:
    # Arrow is imported on the first CSV answer, not with the API: the daemon stays lean.
    from market_data.export.formats import CsvEncoder

    encoder = CsvEncoder(timestamps)
    chunks = store.candle_columns(series, start_ms, end_ms, chunk_rows=CSV_CHUNK_ROWS, limit=limit)
    first: CandleColumns | None = await anext(chunks, None)

    async def body() -> AsyncIterator[bytes]:
        yield encoder.header()
        try:
            if first is not None:
                yield await asyncio.to_thread(encoder.encode, first)
            async for chunk in chunks:
                # Arrow encodes outside the GIL: other requests go on meanwhile.
                yield await asyncio.to_thread(encoder.encode, chunk)
        except MarketDataError:
            log.warning("API /candles: the store failed mid-answer; the answer is cut short")
            raise

    name = f"{series.symbol}_{series.timeframe}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


async def _json_chunks(
    store: Store, series: SeriesKey, start_ms: int, end_ms: int, limit: int
) -> AsyncIterator[tuple[str, int]]:
    """(comma-joined JSON objects, rows) per non-empty keyset page, at most `limit` rows."""
    left = limit
    while left > 0 and start_ms < end_ms:
        want = min(JSON_CHUNK_ROWS, left)
        # The store may build the rows' JSON itself (PostgreSQL); otherwise it is written here.
        built = await store.candles_json(series, start_ms, end_ms, want)
        if built is None:
            candles = await store.candles_in_range(series, start_ms, end_ms, want)
            text, count = candles_json(candles), len(candles)
            last = candles[-1].ts if candles else None
        else:
            text, count, last = built
        if count:
            yield text, count
        if count < want or last is None:
            return
        left -= count
        start_ms = last + 1


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
