"""GET /coverage, the dashboard's page and assets, and what /status gained for it: in-process
(httpx.ASGITransport) on a real store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import Candle, SeriesKey
from market_data.timeframes import HOUR_MS, align, format_ts
from tests.plugins.db import record_gaps

T0 = align(1_767_225_600_000, "1d")  # 2026-01-01T00:00:00Z
BTC_1H = SeriesKey("BTCUSD", "1h")
HOURS = 200


def _candle(series: SeriesKey, ts: int) -> Candle:
    return Candle(series.symbol, series.timeframe, ts, 100.0, 102.0, 99.0, 101.0, 3.5, True)


def _h(n: int) -> int:
    return T0 + n * HOUR_MS


def _iso(n: int) -> str:
    return format_ts(_h(n))


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[Daemon]:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        bitfinex_symbols="BTCUSD,DOGEUSD",
        bitfinex_timeframes="1h",
        bitfinex_rest_url="http://127.0.0.1:9",
        bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
        api_token="tok-coverage-1",
    )
    built = Daemon(settings)
    built.state.database_ready = True
    built.state.phase = "running"
    store = built.store
    # Hours 0..199, except: 20..22 an open gap, 40 a failed one, 60..61 repaired (stored
    # again), 80..83 closed as empty, 100..104 a recorded empty range without a gap row, and
    # 190..191 a hole after the detector's watermark (hour 180) that nothing recorded yet.
    missing = {*range(20, 23), 40, *range(80, 84), *range(100, 105), 190, 191}
    await store.upsert_candles([_candle(BTC_1H, _h(i)) for i in range(HOURS) if i not in missing])
    gaps = await record_gaps(
        store, BTC_1H, [(_h(20), _h(23)), (_h(40), _h(41)), (_h(60), _h(62)), (_h(80), _h(84))]
    )
    by_start = {g.gap_start: g for g in gaps}
    await store.record_gap_failure(by_start[_h(40)].id, "boom", _h(300), failed=True)
    await store.close_gap(by_start[_h(60)].id, "repaired", 2, _h(300))
    await store.close_gap(by_start[_h(80)].id, "empty", 0, _h(300))
    await store.add_empty_ranges(BTC_1H, [(_h(80), _h(84)), (_h(100), _h(105))])
    await store.set_scan_states({BTC_1H: (_h(0), _h(180))})
    try:
        yield built
    finally:
        await built.rest.aclose()
        await built.store.close()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def _run(a: int, b: int, state: str) -> dict[str, str]:
    return {"start": _iso(a), "end": _iso(b), "state": state}


async def _coverage(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(
        "/coverage", params={"symbol": "btcusd", "timeframe": "1h", **params}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_coverage_composes_the_records_into_merged_runs(client: httpx.AsyncClient) -> None:
    body = await _coverage(client, end=_iso(210))
    assert body["symbol"] == "BTCUSD"
    assert body["start"] == _iso(0)  # no start: from the first candle
    assert body["end"] == _iso(210)
    assert body["truncated"] is False
    assert body["runs"] == [
        _run(0, 20, "stored"),
        _run(20, 23, "gap"),
        _run(23, 40, "stored"),
        _run(40, 41, "failed"),
        _run(41, 80, "stored"),
        _run(80, 84, "empty"),
        _run(84, 100, "stored"),
        _run(100, 105, "empty"),
        _run(105, 190, "stored"),
        _run(190, 192, "unknown"),  # past the watermark, found by the bounded search
        _run(192, 200, "stored"),
        _run(200, 210, "unknown"),  # after the newest candle
    ]


async def test_coverage_window_and_bounds(client: httpx.AsyncClient) -> None:
    body = await _coverage(client, start=str(_h(30)), end=_iso(45))
    assert body["runs"] == [_run(30, 40, "stored"), _run(40, 41, "failed"), _run(41, 45, "stored")]
    unknown = await client.get(
        "/coverage",
        params={"symbol": "ETHUSD", "timeframe": "1h", "start": _iso(0), "end": _iso(5)},
    )
    assert unknown.json()["runs"] == [_run(0, 5, "unknown")]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"timeframe": "1h"}, "symbol"),
        ({"symbol": "BTCUSD"}, "timeframe"),
        ({"symbol": "B@D", "timeframe": "1h"}, "symbol"),
        ({"symbol": "BTCUSD", "timeframe": "7m"}, "timeframe"),
        ({"symbol": "BTCUSD", "timeframe": "1h", "start": "yesterday"}, "start"),
        ({"symbol": "BTCUSD", "timeframe": "1h", "end": "2026-13-01"}, "end"),
        ({"symbol": "BTCUSD", "timeframe": "1h", "start": _iso(5), "end": _iso(5)}, "end"),
        ({"symbol": "BTCUSD", "timeframe": "1h", "start": "9" * 16}, "start"),
    ],
)
async def test_coverage_bad_input_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    response = await client.get("/coverage", params=params)
    assert response.status_code == 422, response.text
    assert any(err["loc"][-1] == name for err in response.json()["detail"])


async def test_coverage_is_bounded_when_gap_rows_are_too_many(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    from market_data.storage.coverage import COVERAGE_LIST

    series = SeriesKey("DOGEUSD", "1m")
    minute = 60_000
    await daemon.store.upsert_candles([_candle(series, T0), _candle(series, T0 + 30_000 * minute)])
    count = COVERAGE_LIST + 5
    holes = [(T0 + (2 * i + 1) * minute, T0 + (2 * i + 2) * minute) for i in range(count)]
    await record_gaps(daemon.store, series, holes)
    response = await client.get("/coverage", params={"symbol": "DOGEUSD", "timeframe": "1m"})
    body = response.json()
    assert body["truncated"] is True
    cut = T0 + (2 * COVERAGE_LIST + 1) * minute  # the first gap row left out
    assert body["end"] == format_ts(cut)
    assert sum(1 for r in body["runs"] if r["state"] == "gap") == COVERAGE_LIST
    assert len(body["runs"]) <= 2 * COVERAGE_LIST + 2


async def test_dashboard_page_and_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "/static/js/main.js" in page.text
    assert "https://" not in page.text.split("<footer>")[0]  # nothing loaded from outside
    for path, kind in [
        ("/static/js/main.js", "javascript"),
        ("/static/dashboard.css", "css"),
        ("/static/vendor/lightweight-charts.standalone.production.js", "javascript"),
    ]:
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert kind in asset.headers["content-type"], (path, asset.headers["content-type"])
    assert (await client.get("/static/nope.js")).status_code == 404
    assert (await client.get("/static/../app.py")).status_code == 404
    # The API keeps its paths.
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/coverage" in spec["paths"]
    assert "/" not in spec["paths"]
    assert (await client.get("/health")).status_code == 200


async def test_status_gains_completeness_and_the_rate_limiter(client: httpx.AsyncClient) -> None:
    body = (await client.get("/status")).json()
    btc = next(s for s in body["series"] if (s["symbol"], s["timeframe"]) == ("BTCUSD", "1h"))
    assert btc["expected_candles"] == HOURS
    assert btc["candle_count"] == HOURS - 15
    assert btc["empty_candles"] == 9  # 80..83 and 100..104
    assert btc["completeness"] == pytest.approx((HOURS - 15 + 9) / HOURS)
    doge = next(s for s in body["series"] if s["symbol"] == "DOGEUSD")
    assert doge["completeness"] is None
    assert doge["expected_candles"] is None
    limiter = body["rate_limiter"]
    assert limiter["requests"] == 0
    assert limiter["rate_limited"] == 0
    assert limiter["penalty_seconds_left"] == 0
    assert set(limiter["waiting"]) == {"URGENT", "NORMAL", "BULK"}
