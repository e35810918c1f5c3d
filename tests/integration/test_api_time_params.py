"""Every time parameter of every endpoint, given arbitrary text: a 422 naming it or a 200, never
a 500 (the app in-process on a real SQLite store).

The endpoints are found in the app's own OpenAPI (a query parameter documented as taking epoch
milliseconds), so an endpoint added later is covered without touching this file; its other
required parameters need a valid value in VALID_VALUES.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.python.asgi import get_client

from market_data.api.app import create_app
from market_data.api.params import TIME_HELP
from market_data.config import load_settings
from market_data.daemon import Daemon

# A valid value for every required parameter an endpoint with a time parameter may have.
VALID_VALUES = {"symbol": "BTCUSD", "timeframe": "1m"}
TIME_PARAMETER_MARK = "epoch milliseconds"  # in TIME_HELP, and in any time parameter's text


def _time_parameters(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """(path, time parameter, required parameters) for every GET endpoint with one."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        query = [p for p in get.get("parameters", []) if p["in"] == "query"]
        required = [p["name"] for p in query if p.get("required")]
        for parameter in query:
            if TIME_PARAMETER_MARK in parameter.get("description", ""):
                found.append((path, parameter["name"], required))
    return found


@pytest.fixture(scope="module")
def api(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("time-params") / "market_data.db"
    shutil.copyfile(sqlite_template, path)
    daemon = Daemon(
        load_settings(
            env_file=None,
            database_url=f"sqlite:///{path}",
            bitfinex_symbols="BTCUSD",
            bitfinex_timeframes="1m,1h",
            bitfinex_rest_url="http://127.0.0.1:9",
            bitfinex_ws_url="ws://127.0.0.1:9/ws/2",
        )
    )
    daemon.state.database_ready = True
    daemon.state.phase = "running"
    app = create_app(daemon)
    # One client (one event loop) for the whole module: the store's connections live on it.
    with get_client(app) as client:
        client.base_url = "http://127.0.0.1"  # a Host the API answers (API_ALLOWED_HOSTS)
        client.app_under_test = app
        yield client


@pytest.fixture(scope="module")
def time_parameters(api: Any) -> list[tuple[str, str, list[str]]]:
    assert TIME_PARAMETER_MARK in TIME_HELP
    found = _time_parameters(api.app_under_test)
    assert ("/candles", "start", ["symbol", "timeframe"]) in found, found
    assert ("/candles", "end", ["symbol", "timeframe"]) in found, found
    for path, _, required in found:
        missing = set(required) - set(VALID_VALUES)
        assert not missing, f"{path}: add a valid value for {missing} to VALID_VALUES"
    return found


def _check(api: Any, path: str, name: str, value: str) -> None:
    params = {**VALID_VALUES, name: value}
    response = api.get(path, params=params)
    assert response.status_code in (200, 422), (path, name, value, response.text)
    if response.status_code == 422:
        # Usually `name` itself; a valid time can make another parameter wrong (an end before it).
        named = {error["loc"][-1] for error in response.json()["detail"]}
        assert named, (path, name, value, response.text)
        assert named <= {*params, "end"}, (path, name, value, named)


def _iso(moment: datetime, offset_minutes: int) -> str:
    zone = UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
    return moment.replace(tzinfo=zone).isoformat()


# Arbitrary text (surrogates cannot be sent in a URL), digits of every script, and ISO 8601 from
# the first year to the last with any offset a datetime allows.
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_DIGITS = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=16)
_ISO = st.builds(
    _iso,
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
# The calendar's ends, where an offset pushes the UTC time out of datetime's range.
_EDGE_ISO = st.builds(
    _iso,
    st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(2200, 1, 1)]),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
_EPOCH_MS = st.integers(min_value=-(10**16), max_value=10**17).map(str)
ANY_TIME_TEXT = st.one_of(_TEXT, _DIGITS, _ISO, _EDGE_ISO, _EPOCH_MS)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=ANY_TIME_TEXT)
def test_any_text_in_any_time_parameter_is_a_422_or_a_200(
    api: Any, time_parameters: list[tuple[str, str, list[str]]], value: str
) -> None:
    for path, name, _ in time_parameters:
        _check(api, path, name, value)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-23:59",  # the report: year 10000 in UTC answered 500
        "9999-12-31T23:59:59Z",
        # Arabic-Indic and full-width digits: int() takes them
        "\u0661\u0667\u0666\u0667\u0662\u0662\u0665\u0666\u0660\u0660\u0660\u0660\u0660",
        "\uff11\uff17\uff16\uff17\uff12\uff12\uff15\uff16\uff10\uff10\uff10\uff10\uff10",
        "2200-01-01T00:00:00.001Z",
        "1969-12-31T23:59:59Z",
    ],
)
def test_reported_values_are_refused_naming_the_parameter(
    api: Any, time_parameters: list[tuple[str, str, list[str]]], value: str
) -> None:
    for path, name, _ in time_parameters:
        response = api.get(path, params={**VALID_VALUES, name: value})
        assert response.status_code == 422, (path, name, value, response.text)
        assert ["query", name] in [error["loc"] for error in response.json()["detail"]]


def test_the_range_ends_are_accepted(api: Any) -> None:
    both = {**VALID_VALUES, "start": "1970-01-01T00:00:00Z", "end": "2200-01-01T00:00:00Z"}
    response = api.get("/candles", params=both)
    assert response.status_code == 200, response.text
    assert response.json()["end"] == "2200-01-01T00:00:00Z"
