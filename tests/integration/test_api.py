"""The HTTP API in-process (httpx.ASGITransport) on a real store, on SQLite and PostgreSQL.

The daemon is built (every part constructed from settings) but not run: the routes read its store
and state objects, which is what they do inside the running daemon too.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import Candle, SeriesKey
from market_data.timeframes import HOUR_MS, MINUTE_MS, align
from tests.plugins.db import record_gaps

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TOKEN = "tok-3f9a1c7e5b2d"
T0 = align(1_767_225_600_000, "1d")  # 2026-01-01T00:00:00Z
BTC_1M = SeriesKey("BTCUSD", "1m")


def _settings(database_url: str, **overrides: Any):
    values: dict[str, Any] = {
        "database_url": database_url,
        "bitfinex_symbols": "BTCUSD,DOGEUSD",
        "bitfinex_timeframes": "1m,1h,4h",
        "bitfinex_rest_url": "http://127.0.0.1:9",
        "bitfinex_ws_url": "ws://127.0.0.1:9/ws/2",
        "api_token": TOKEN,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


def _candle(series: SeriesKey, ts: int, price: float = 100.0, final: bool = True) -> Candle:
    return Candle(
        series.symbol, series.timeframe, ts, price, price + 2, price - 1, price + 1, 3.5, final
    )


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[Daemon]:
    built = Daemon(_settings(database_url))
    built.state.database_ready = True
    built.state.phase = "running"
    store = built.store
    await store.upsert_candles([_candle(BTC_1M, T0 + i * MINUTE_MS, 100.0 + i) for i in range(300)])
    await store.upsert_candles(
        [_candle(SeriesKey("DOGEUSD", "1h"), T0 + i * HOUR_MS, 0.1 + i) for i in range(5)]
    )
    await store.upsert_candles([_candle(SeriesKey("BTCUSD", "1d"), T0)])
    gaps = await record_gaps(
        store,
        BTC_1M,
        [
            (T0 + 400 * MINUTE_MS, T0 + 403 * MINUTE_MS),
            (T0 + 500 * MINUTE_MS, T0 + 501 * MINUTE_MS),
        ],
    )
    await record_gaps(store, SeriesKey("DOGEUSD", "1h"), [(T0 + 10 * HOUR_MS, T0 + 12 * HOUR_MS)])
    await store.close_gap(gaps[0].id, "repaired", 3, T0 + 1000 * MINUTE_MS)
    for job_type, status, symbol in [
        ("backfill", "success", "BTCUSD"),
        ("gap_repair", "failed", None),
        ("backfill", "failed", "DOGEUSD"),
    ]:
        job = await store.create_job(job_type, symbol, "1m" if symbol else None)
        await store.finish_job(job, status, 7, "boom" if status == "failed" else None)
    await store.create_job("update")  # still running
    try:
        yield built
    finally:
        await built.rest.aclose()
        await built.store.close()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(daemon))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8100") as c:
        yield c


def _bad(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, response.text
    locs = [err["loc"] for err in response.json()["detail"]]
    assert any(loc[-1] == name for loc in locs), locs


# -- /candles ---------------------------------------------------------------------------------


async def test_candles_range_ascending_with_iso_and_epoch_bounds(client: httpx.AsyncClient) -> None:
    start, end = T0 + 10 * MINUTE_MS, T0 + 20 * MINUTE_MS
    by_iso = await client.get(
        "/candles",
        params={
            "symbol": "tBTCUSD",
            "timeframe": "1m",
            "start": "2026-01-01T00:10:00Z",
            "end": "2026-01-01T00:20:00+00:00",
        },
    )
    by_ms = await client.get(
        "/candles",
        params={"symbol": "btcusd", "timeframe": "1m", "start": str(start), "end": str(end)},
    )
    assert by_iso.status_code == 200, by_iso.text
    body = by_iso.json()
    assert body == by_ms.json()
    assert body["symbol"] == "BTCUSD"
    assert body["count"] == 10
    assert body["start"] == "2026-01-01T00:10:00Z"
    times = [c["ts"] for c in body["candles"]]
    assert times == sorted(times)
    assert times[0] == "2026-01-01T00:10:00Z"
    assert times[-1] == "2026-01-01T00:19:00Z"
    assert all(ISO.match(t) for t in times)
    first = body["candles"][0]
    assert first == {
        "ts": "2026-01-01T00:10:00Z",
        "open": 110.0,
        "high": 112.0,
        "low": 109.0,
        "close": 111.0,
        "volume": 3.5,
        "final": True,
    }


async def test_candles_limits_and_defaults(client: httpx.AsyncClient) -> None:
    page = await client.get(
        "/candles", params={"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0), "limit": 7}
    )
    assert [c["ts"] for c in page.json()["candles"]][-1] == "2026-01-01T00:06:00Z"
    assert page.json()["count"] == 7
    default = await client.get(
        "/candles", params={"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0)}
    )
    assert default.json()["count"] == 300  # under the default limit of 1000
    _bad(
        await client.get(
            "/candles", params={"symbol": "BTCUSD", "timeframe": "1m", "limit": 10_001}
        ),
        "limit",
    )
    _bad(
        await client.get("/candles", params={"symbol": "BTCUSD", "timeframe": "1m", "limit": 0}),
        "limit",
    )
    # Without start: the `limit` periods before end.
    tail = await client.get(
        "/candles",
        params={
            "symbol": "BTCUSD",
            "timeframe": "1m",
            "end": str(T0 + 300 * MINUTE_MS),
            "limit": 5,
        },
    )
    assert [c["ts"][11:16] for c in tail.json()["candles"]] == [
        "04:55",
        "04:56",
        "04:57",
        "04:58",
        "04:59",
    ]


async def test_candles_timeframe_spellings_and_colon_symbols(client: httpx.AsyncClient) -> None:
    daily = await client.get(
        "/candles", params={"symbol": "tBTC:USD", "timeframe": "1D", "start": "2026-01-01"}
    )
    assert daily.status_code == 200, daily.text
    assert daily.json()["timeframe"] == "1d"
    assert [c["ts"] for c in daily.json()["candles"]] == ["2026-01-01T00:00:00Z"]
    doge = await client.get(
        "/candles", params={"symbol": "doge:usd", "timeframe": "1H", "start": "2026-01-01T00:00:00"}
    )
    assert doge.json()["symbol"] == "DOGEUSD"
    assert doge.json()["count"] == 5


BAD_CANDLE_PARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"timeframe": "1m"}, "symbol"),
    ({"symbol": "BTCUSD"}, "timeframe"),
    ({"symbol": "B", "timeframe": "1m"}, "symbol"),
    ({"symbol": "BTC/USD", "timeframe": "1m"}, "symbol"),
    ({"symbol": "BTCUSD", "timeframe": "7m"}, "timeframe"),
    ({"symbol": "BTCUSD", "timeframe": "1m", "start": "yesterday"}, "start"),
    ({"symbol": "BTCUSD", "timeframe": "1m", "start": "2026-13-01"}, "start"),
    ({"symbol": "BTCUSD", "timeframe": "1m", "end": "99999999999999999"}, "end"),
    ({"symbol": "BTCUSD", "timeframe": "1m", "start": "2026-01-02", "end": "2026-01-01"}, "end"),
    ({"symbol": "BTCUSD", "timeframe": "1m", "limit": "ten"}, "limit"),
    ({"symbol": "BTCUSD" * 20, "timeframe": "1m"}, "symbol"),
]


async def test_candles_bad_parameters_are_422_naming_them(client: httpx.AsyncClient) -> None:
    for params, name in BAD_CANDLE_PARAMETERS:
        _bad(await client.get("/candles", params=params), name)


# -- /gaps and /jobs --------------------------------------------------------------------------


async def test_gaps_filters_order_and_limits(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/gaps")).json()
    assert everything["count"] == 3
    starts = [g["gap_start"] for g in everything["gaps"]]
    assert starts == sorted(starts, reverse=True)
    open_ = (await client.get("/gaps", params={"repaired": "false"})).json()["gaps"]
    assert {(g["symbol"], g["gap_start"]) for g in open_} == {
        ("BTCUSD", "2026-01-01T08:20:00Z"),
        ("DOGEUSD", "2026-01-01T10:00:00Z"),
    }
    closed = (await client.get("/gaps", params={"repaired": "true"})).json()["gaps"]
    assert len(closed) == 1
    assert closed[0]["status"] == "repaired"
    assert closed[0]["candles_repaired"] == 3
    assert closed[0]["missing_candles"] == 3
    assert ISO.match(closed[0]["repaired_at"])
    assert closed[0]["gap_end"] == "2026-01-01T06:43:00Z"
    doge = (await client.get("/gaps", params={"symbol": "tDOGE:USD", "timeframe": "1H"})).json()
    assert [g["missing_candles"] for g in doge["gaps"]] == [2]
    assert (await client.get("/gaps", params={"limit": 1})).json()["count"] == 1
    _bad(await client.get("/gaps", params={"limit": 1001}), "limit")
    _bad(await client.get("/gaps", params={"limit": 0}), "limit")
    _bad(await client.get("/gaps", params={"repaired": "perhaps"}), "repaired")
    _bad(await client.get("/gaps", params={"timeframe": "2d"}), "timeframe")


async def test_jobs_filters_order_and_validation(client: httpx.AsyncClient) -> None:
    jobs = (await client.get("/jobs")).json()["jobs"]
    assert [j["job_type"] for j in jobs] == ["update", "backfill", "gap_repair", "backfill"]
    assert jobs[0]["status"] == "running"
    assert jobs[0]["completed_at"] is None
    assert all(ISO.match(j["started_at"]) for j in jobs)
    failed = (await client.get("/jobs", params={"status": "failed"})).json()["jobs"]
    assert {j["job_type"] for j in failed} == {"gap_repair", "backfill"}
    assert all(j["last_error"] == "boom" for j in failed)
    backfills = (
        await client.get("/jobs", params={"job_type": "backfill", "symbol": "doge:usd"})
    ).json()["jobs"]
    assert [(j["symbol"], j["status"]) for j in backfills] == [("DOGEUSD", "failed")]
    assert (await client.get("/jobs", params={"limit": 2})).json()["count"] == 2
    _bad(await client.get("/jobs", params={"job_type": "reticulate"}), "job_type")
    _bad(await client.get("/jobs", params={"status": "done"}), "status")
    _bad(await client.get("/jobs", params={"limit": 1001}), "limit")
    _bad(await client.get("/jobs", params={"symbol": "?"}), "symbol")


# -- /status, /health, /metrics, /docs -----------------------------------------------------------


async def test_status_reports_series_from_stats_loops_and_websocket(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/status")
    assert response.status_code == 200, response.text
    body = response.json()
    series = {(s["symbol"], s["timeframe"]): s for s in body["series"]}
    btc = series[("BTCUSD", "1m")]
    assert btc["candle_count"] == 300
    assert btc["first_candle"] == "2026-01-01T00:00:00Z"
    assert btc["last_candle"] == "2026-01-01T04:59:00Z"
    assert btc["open_gaps"] == 1
    assert btc["lag_seconds"] > 0
    assert series[("DOGEUSD", "4h")]["derived"] is True
    assert series[("BTCUSD", "1d")]["configured"] is False  # stored, not configured
    assert series[("BTCUSD", "1h")]["candle_count"] == 0  # configured, nothing stored yet
    assert body["open_gaps"] == 2
    assert body["database_reachable"] is True
    loops = {loop["name"] for loop in body["loops"]}
    assert {"gap_detection", "gap_repair", "cleanup", "wal_checkpoint"} & loops >= {
        "gap_detection",
        "gap_repair",
        "cleanup",
    }
    assert body["websocket"]["enabled"] is True
    assert body["websocket"]["connections"] == 0
    assert ISO.match(body["now"])


async def test_health_ok_then_degraded_by_a_failing_loop(
    client: httpx.AsyncClient, daemon: Daemon
) -> None:
    daemon.ws = None  # not running here: a WebSocket with no connections is not the point
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok", body
    assert body["checks"]["database"]["status"] == "ok"
    daemon.loops["gap_repair"].status.consecutive_failures = 3
    daemon.loops["gap_repair"].status.last_error = "ExchangeUnavailable: down"
    body = (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert "gap_repair" in body["checks"]["loops"]["detail"]
    daemon.state.unknown_symbols = ["FOOBAR"]
    assert "FOOBAR" in (await client.get("/health")).json()["checks"]["symbols"]["detail"]


async def test_metrics_exposes_the_state_objects(client: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.sink.stats.written_by_source["ws"] = 42
    assert daemon.ws is not None
    for waited in (0.003, 0.2, 1.5):
        daemon.ws.state.writer.commit_seconds.observe(waited)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'market_data_candles_written_total{source="ws"} 42.0' in text
    assert "market_data_upsert_seconds_count 3.0" in text  # the fixture's three upserts, timed
    assert 'market_data_rest_requests_total{outcome="ok"}' in text
    assert 'market_data_series_candles{symbol="BTCUSD",timeframe="1m"} 300.0' in text
    assert 'market_data_series_lag_seconds{symbol="BTCUSD",timeframe="1m"}' in text
    assert "market_data_database_up 1.0" in text
    assert 'market_data_database_writes_failing{fault="read-only"} 0.0' in text
    assert "market_data_api_reads_refused_total 0.0" in text
    assert 'market_data_loop_runs_total{loop="gap_repair"} 0.0' in text
    commit = "market_data_ws_update_to_commit_seconds"
    assert f'{commit}_bucket{{le="0.005"}} 1.0' in text
    assert f'{commit}_bucket{{le="0.25"}} 2.0' in text
    assert f'{commit}_bucket{{le="1.0"}} 2.0' in text
    assert f'{commit}_bucket{{le="2.5"}} 3.0' in text
    assert f'{commit}_bucket{{le="+Inf"}} 3.0' in text
    assert f"{commit}_count 3.0" in text
    assert f"{commit}_sum 1.703" in text


async def test_openapi_documents_every_endpoint(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/health",
        "/status",
        "/gaps",
        "/jobs",
        "/candles",
        "/metrics",
        "/backfill",
        "/gaps/repair",
    ):
        assert path in spec["paths"], path
    candles = spec["paths"]["/candles"]["get"]["responses"]["200"]["content"]["application/json"]
    assert candles["schema"]["$ref"].endswith("/CandlesOut")


# -- state-changing endpoints -------------------------------------------------------------------


async def test_tokens_401_403_and_disabled(client: httpx.AsyncClient, daemon: Daemon) -> None:
    for path in ("/backfill", "/gaps/repair"):
        missing = await client.post(path)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"] == "Bearer"
        assert (await client.post(path, headers={"Authorization": "Basic eDp5"})).status_code == 401
        wrong = await client.post(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert TOKEN not in wrong.text
    good = {"Authorization": f"Bearer {TOKEN}"}
    _bad(await client.post("/backfill", params={"days": "-1"}, headers=good), "days")
    _bad(await client.post("/backfill", params={"symbol": "ZRXUSD"}, headers=good), "symbol")
    _bad(await client.post("/gaps/repair", params={"max": 0}, headers=good), "max")
    # Authorized, but the daemon is not running in this test: no work is accepted.
    assert (await client.post("/gaps/repair", headers=good)).status_code == 503
    daemon.settings = _settings(daemon.settings.database_url, api_token="")
    disabled = await client.post("/backfill", headers=good)
    assert disabled.status_code == 403
    assert "disabled" in disabled.json()["detail"]


async def test_garbage_parameters_never_500(client: httpx.AsyncClient) -> None:
    junk = [
        "",
        " ",
        "-1",
        "1e999",
        "nan",
        "\x00",
        "%",
        "9" * 40,
        "2026-02-30",
        "true",
        "tBTC:USD:EUR",
        "1M",
        "0",
    ]
    names = {
        "/candles": ["symbol", "timeframe", "start", "end", "limit"],
        "/gaps": ["symbol", "timeframe", "repaired", "limit"],
        "/jobs": ["symbol", "job_type", "status", "limit"],
    }
    for path, params in names.items():
        for name in params:
            for value in junk:
                query = {"symbol": "BTCUSD", "timeframe": "1m"} if path == "/candles" else {}
                query[name] = value
                response = await client.get(path, params=query)
                assert response.status_code in (200, 422), (path, name, value, response.text)
                if response.status_code == 422:
                    assert response.json()["detail"], (path, name, value)


async def test_unreachable_database_is_503_without_secrets() -> None:
    password = "pw-7b1e9d0c"
    daemon = Daemon(_settings(f"postgresql://md:{password}@127.0.0.1:1/nowhere"))
    try:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8100") as c:
            health = await c.get("/health")
            status = await c.get("/status")
            metrics = await c.get("/metrics")
            candles = await c.get("/candles", params={"symbol": "BTCUSD", "timeframe": "1m"})
    finally:
        await daemon.rest.aclose()
        await daemon.store.close()
    assert health.status_code == 503
    assert health.json()["checks"]["database"]["status"] == "down"
    assert status.status_code == 200
    assert status.json()["database_reachable"] is False
    assert "market_data_database_up 0.0" in metrics.text
    assert candles.status_code == 503
    assert candles.headers["Retry-After"].isdigit()  # a client knows when to come back
    for response in (health, status, metrics, candles):
        assert password not in response.text
        assert TOKEN not in response.text
