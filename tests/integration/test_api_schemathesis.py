"""The HTTP API under schemathesis, against its own OpenAPI, in-process (ASGI) on a real SQLite
store; then hand-written hostile parameters, every limit, and the token rules.

Schemathesis generates valid and invalid requests for every operation (bounded: MAX_EXAMPLES per
operation) and checks: no 5xx, documented status codes and content types, and bodies matching
the response schemas. The number of cases run is printed at the end of the module (run with -s).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from market_data.api.app import create_app
from market_data.config import load_settings
from market_data.daemon import Daemon
from market_data.models import Candle, SeriesKey
from market_data.storage.sql import open_store
from market_data.timeframes import HOUR_MS, MINUTE_MS, align
from tests.plugins.db import BACKENDS, ClonePool, _url_for, record_gaps, run_sync

TOKEN = "schema-token-0c4f2a"
# The API answers only its own Host names (API_ALLOWED_HOSTS), not schemathesis's "testserver".
BASE_URL = "http://127.0.0.1:8100"
T0 = align(1_767_225_600_000, "1d")  # 2026-01-01T00:00:00Z
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CASES_RUN: dict[str, int] = {}


async def _populate(url: str) -> None:
    store = open_store(url)
    try:
        await store.upgrade()
        btc = SeriesKey("BTCUSD", "1m")
        await store.upsert_candles(
            [
                Candle(
                    "BTCUSD",
                    "1m",
                    T0 + i * MINUTE_MS,
                    100.0 + i,
                    102.0 + i,
                    99.0 + i,
                    101.0 + i,
                    3.5,
                    True,
                )
                for i in range(200)
            ]
        )
        await store.upsert_candles(
            [
                Candle("DOGEUSD", "1h", T0 + i * HOUR_MS, 0.1, 0.2, 0.05, 0.15, 1e6, True)
                for i in range(10)
            ]
        )
        await record_gaps(store, btc, [(T0 + 300 * MINUTE_MS, T0 + 303 * MINUTE_MS)])
        job = await store.create_job("backfill", "BTCUSD", "1m")
        await store.finish_job(job, "success", 200)
        await store.create_job("update")
    finally:
        await store.close()


@pytest.fixture(scope="module", params=BACKENDS)
def api_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    clone: str | None = None
    clones: ClonePool | None = None
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("schemathesis") / "market_data.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        clones = request.getfixturevalue("postgres_clones")
        clone = clones.take()
        url = _url_for(clone)
    run_sync(_populate(url))
    daemon = Daemon(
        load_settings(
            env_file=None,
            database_url=url,
            bitfinex_symbols="BTCUSD,DOGEUSD",
            bitfinex_timeframes="1m,1h,4h",
            bitfinex_rest_url="http://127.0.0.1:9",
            bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
            api_token=TOKEN,
        )
    )
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    yield create_app(daemon)
    total = sum(CASES_RUN.values())
    print(
        f"\nschemathesis ({request.param}): {total} cases run over {len(CASES_RUN)} operations: "
        + ", ".join(f"{op} {n}" for op, n in sorted(CASES_RUN.items()))
    )
    CASES_RUN.clear()
    if clones is not None and clone is not None:
        # The app's connections live on schemathesis's event loop; dropping the database
        # (WITH FORCE) ends them.
        clones.release(clone)


@pytest.fixture(scope="module")
def api_schema(api_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi(
        "/openapi.json", api_app, headers={"Host": BASE_URL.removeprefix("http://")}
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi(api_schema: Any, mode: GenerationMode) -> None:
    # One Hypothesis run per operation, so every operation gets its share of examples.
    # (schemathesis.pytest.from_fixture does not work with this pytest version.)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.query or operation.headers):
            continue  # nothing to make invalid (GET /health, /status, /metrics)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            label = f"{case.method} {case.path} ({mode.value})"
            CASES_RUN[label] = CASES_RUN.get(label, 0) + 1
            case.call_and_validate(base_url=BASE_URL, checks=CHECKS)

        run()
    assert sum(CASES_RUN.values()) > 0


# -- hand-written cases ---------------------------------------------------------------------


@pytest.fixture
def client(api_app: FastAPI) -> Iterator[Any]:
    # Schemathesis's own ASGI client: the app runs on the same event loop as the cases above.
    with get_client(api_app) as test_client:
        test_client.base_url = BASE_URL
        yield test_client


INJECTIONS: list[tuple[str, dict[str, Any]]] = [
    ("/candles", {"symbol": "' OR 1=1 --", "timeframe": "1m"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1h;DROP TABLE candles"}),
    ("/candles", {"symbol": "BTCUSD'; DELETE FROM candles; --", "timeframe": "1m"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "0 OR 1=1"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "end": "2026-01-01'--"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "9" * 40}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "-1"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "2026-13-45"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "1e309"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "start": "NaN"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "limit": "-5"}),
    ("/candles", {"symbol": "BTCUSD", "timeframe": "1m", "limit": str(2**70)}),
    ("/candles", {"symbol": "BTCUSD\x00", "timeframe": "1m"}),
    ("/candles", {"symbol": "%27%20OR%201%3D1", "timeframe": "1m"}),
    ("/gaps", {"symbol": "' OR ''='"}),
    ("/gaps", {"timeframe": "1m UNION SELECT * FROM ingestion_jobs"}),
    ("/gaps", {"repaired": "1; DROP TABLE data_gaps"}),
    ("/gaps", {"limit": "-1"}),
    ("/jobs", {"job_type": "backfill' OR '1'='1"}),
    ("/jobs", {"status": "running; --"}),
    ("/jobs", {"symbol": "BTC/**/USD"}),
    ("/jobs", {"limit": "99999999999999999999999"}),
]


def _answer_is_safe(response: Any) -> None:
    # 422 naming the parameter, or an empty answer; never a 5xx, never a stack trace.
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["count"] == 0, response.text
    else:
        assert response.json()["detail"], response.text
    assert "Traceback" not in response.text
    assert "sqlalchemy" not in response.text.lower()


@pytest.mark.parametrize(("path", "params"), INJECTIONS)
def test_injection_shaped_parameters_are_refused_or_empty(
    client: Any, path: str, params: dict[str, Any]
) -> None:
    _answer_is_safe(client.get(path, params=params))


def test_injections_left_the_tables_alone(client: Any) -> None:
    for _, params in INJECTIONS:
        client.get("/candles", params=params)
    body = client.get(
        "/candles",
        params={"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0), "limit": 10_000},
    ).json()
    assert body["count"] == 200
    assert client.get("/gaps").json()["count"] == 1
    assert client.get("/jobs").json()["count"] == 2


@pytest.mark.parametrize(
    ("path", "name", "maximum", "extra"),
    [
        ("/candles", "limit", 10_000, {"symbol": "BTCUSD", "timeframe": "1m", "start": str(T0)}),
        ("/gaps", "limit", 1000, {}),
        ("/jobs", "limit", 1000, {}),
    ],
)
def test_every_limit_is_enforced(
    client: Any, path: str, name: str, maximum: int, extra: dict[str, Any]
) -> None:
    assert client.get(path, params={**extra, name: maximum}).status_code == 200
    for bad in (maximum + 1, 0, -1, 10**30):
        response = client.get(path, params={**extra, name: bad})
        assert response.status_code == 422, (bad, response.text)
        assert any(err["loc"][-1] == name for err in response.json()["detail"]), response.text


def test_post_limits_are_enforced(client: Any) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for params in (
        {"max": 0},
        {"max": 100_001},
        {"max": -3},
        {"days": 0},
        {"days": 36_501},
        {"days": "nan"},
        {"days": "inf"},
        {"symbol": "' OR 1=1"},
        {"timeframe": "1h;DROP TABLE candles"},
    ):
        path = "/gaps/repair" if "max" in params else "/backfill"
        response = client.post(path, params=params, headers=auth)
        assert response.status_code == 422, (params, response.text)


@pytest.mark.parametrize("path", ["/backfill", "/gaps/repair"])
def test_state_changing_endpoints_need_the_token(client: Any, path: str) -> None:
    missing = client.post(path)
    assert missing.status_code == 401, missing.text
    assert missing.headers.get("www-authenticate") == "Bearer"
    for header in (
        f"Bearer {TOKEN}x",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ' OR 1=1 --",
        f"bearer {TOKEN.upper()}",
    ):
        wrong = client.post(path, headers={"Authorization": header})
        assert wrong.status_code in (401, 403), (header, wrong.text)
    assert client.post(path, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post(path, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    for response in (missing, wrong):
        assert TOKEN not in response.text
    # The right token is accepted: the daemon here is built but not running, so the work itself
    # is refused with 503 (documented), never 401/403.
    right = client.post(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code in (202, 503), right.text


def test_schema_documents_every_endpoint(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
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
        assert path in paths, sorted(paths)
