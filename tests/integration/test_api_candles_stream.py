"""GET /candles streamed: JSON across several keyset chunks keeps its shape and exact values;
`format=csv` gives the same candles (ISO or epoch-ms times) up to its own, larger bound."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest

from market_data.api.app import create_app
from market_data.api.routes.candles import JSON_CHUNK_ROWS, MAX_CSV_LIMIT, MAX_LIMIT
from market_data.daemon import Daemon
from market_data.models import Candle, SeriesKey
from market_data.timeframes import MINUTE_MS
from tests.integration.test_api import T0, _settings

BTC = SeriesKey("BTCUSD", "1m")
ROWS = JSON_CHUNK_ROWS + 321  # two JSON chunks


def _candle(i: int) -> Candle:
    price = 100.0 + i / 7
    return Candle(
        "BTCUSD",
        "1m",
        T0 + i * MINUTE_MS,
        price,
        price + 0.1 + 0.2,
        price - 1e-9,
        price,
        i * 0.01,
        i < ROWS - 1,
    )


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    daemon = Daemon(_settings(database_url))
    daemon.state.database_ready = True
    await daemon.store.upsert_candles([_candle(i) for i in range(ROWS)])
    try:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c
    finally:
        await daemon.rest.aclose()
        await daemon.store.close()


def _json_row(c: Candle) -> dict[str, object]:
    return {
        "ts": _iso(c.ts),
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
        "final": c.final,
    }


def _iso(ms: int) -> str:
    from market_data.timeframes import format_ts

    return format_ts(ms)


async def test_json_over_several_chunks_is_whole_and_exact(client: httpx.AsyncClient) -> None:
    params = {"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0), "limit": MAX_LIMIT}
    response = await client.get("/candles", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"symbol", "timeframe", "start", "end", "count", "candles"}
    assert body["count"] == ROWS
    assert body["candles"] == [_json_row(_candle(i)) for i in range(ROWS)]
    # A limit that ends inside the second chunk.
    cut = await client.get("/candles", params={**params, "limit": JSON_CHUNK_ROWS + 5})
    assert cut.json()["count"] == JSON_CHUNK_ROWS + 5
    assert cut.json()["candles"][-1]["ts"] == _iso(T0 + (JSON_CHUNK_ROWS + 4) * MINUTE_MS)
    empty = await client.get(
        "/candles", params={**params, "start": "2025-06-01", "end": "2025-07-01"}
    )
    assert empty.json()["count"] == 0
    assert empty.json()["candles"] == []


async def test_csv_matches_the_stored_candles(client: httpx.AsyncClient) -> None:
    params = {
        "symbol": "tBTC:USD",
        "timeframe": "1m",
        "start": str(T0),
        "format": "csv",
        "limit": 20_000,
    }  # above the JSON bound: CSV allows it
    response = await client.get("/candles", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    assert [(r[0], r[1], r[2], *map(float, r[3:])) for r in rows[1:]] == [
        ("BTCUSD", "1m", _iso(c.ts), c.open, c.high, c.low, c.close, c.volume)
        for c in map(_candle, range(ROWS))
    ]
    ms = await client.get("/candles", params={**params, "timestamps": "ms", "limit": 3})
    assert [int(r[2]) for r in list(csv.reader(io.StringIO(ms.text)))[1:]] == [
        T0,
        T0 + MINUTE_MS,
        T0 + 2 * MINUTE_MS,
    ]
    none = await client.get(
        "/candles", params={**params, "start": "2025-06-01", "end": "2025-07-01"}
    )
    assert none.text == "symbol,timeframe,ts,open,high,low,close,volume\n"


def _bad(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, response.text
    assert any(err["loc"][-1] == name for err in response.json()["detail"]), response.text


async def test_bounds_per_format(client: httpx.AsyncClient) -> None:
    base = {"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0)}
    _bad(await client.get("/candles", params={**base, "limit": MAX_LIMIT + 1}), "limit")
    _bad(
        await client.get("/candles", params={**base, "format": "csv", "limit": MAX_CSV_LIMIT + 1}),
        "limit",
    )
    ok = await client.get("/candles", params={**base, "format": "csv", "limit": MAX_CSV_LIMIT})
    assert ok.status_code == 200
    _bad(await client.get("/candles", params={**base, "format": "xml"}), "format")
    _bad(await client.get("/candles", params={**base, "timestamps": "ms"}), "timestamps")
    _bad(
        await client.get("/candles", params={**base, "format": "csv", "timestamps": "s"}),
        "timestamps",
    )
    _bad(await client.get("/candles", params={**base, "format": "csv", "end": "2025-01-01"}), "end")
