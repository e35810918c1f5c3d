"""Hostile input for every Bitfinex parser: only PayloadError (or, for an error body, its
classified error) may escape, and no row with an invalid value is ever accepted."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from market_data.errors import MarketDataError, PayloadError
from market_data.exchanges.bitfinex.frames import parse_ws_message
from market_data.exchanges.bitfinex.pairs import parse_pair_list
from market_data.exchanges.bitfinex.wire import (
    CLOCK_SKEW_MS,
    classify_http_error,
    is_error_body,
    parse_candle_key,
    parse_candle_row,
    parse_rest_candles,
)
from market_data.timeframes import align, next_open

NOW = 1_800_000_000_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=10**300, max_value=10**320),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e-300, 1e308, NOW, NOW + 60_000, 2**63, -(2**63)]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8), st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)
timeframes = st.sampled_from(["1m", "5m", "1h", "3h", "1d", "1w", "14d", "1M"])


def _text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def deep(n: int, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * n + "1" + closer * n
    return opener * n + closer * n


hostile_texts = st.one_of(
    st.text(max_size=200),
    json_values.map(_text),
    st.integers(1, 200_000).map(deep),
    st.integers(1, 200_000).map(lambda n: deep(n, "{")),
    st.sampled_from(
        [
            "<!DOCTYPE html><html><head><title>502</title></head><body>Bad Gateway</body></html>",
            "NaN",
            "Infinity",
            "-Infinity",
            "[NaN]",
            "[[1,NaN,1,1,1,1]]",
            '["error"]',
            '["error",{},[]]',
            '{"error":null}',
            "1" * 5000,
            "[" + "1" * 5000 + "]",
            '[7,"hb"',
            "\ufeff[]",
            "[1e999]",
            "[[1e999,1,1,1,1,1]]",
        ]
    ),
    st.tuples(json_values.map(_text), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
)
hostile_bytes = st.one_of(st.binary(max_size=300), hostile_texts.map(str.encode))
hostile = st.one_of(hostile_texts, hostile_bytes, json_values)


def _only_parser_errors(call: Any, body: Any) -> None:
    try:
        call(body)
    except PayloadError:
        pass
    except MarketDataError:
        decoded = body
        if isinstance(body, (bytes, str)):
            decoded = json.loads(body)
        assert is_error_body(decoded), f"{type(body)} raised a non-payload error"


@FUZZ
@given(hostile, timeframes)
@example("[" * 100_000, "1m")
@example(b"\xff\xfe\xfd", "1m")
def test_rest_candles_only_raise_payload_errors(body: Any, tf: str) -> None:
    _only_parser_errors(lambda b: parse_rest_candles(b, "BTCUSD", tf, NOW), body)


@FUZZ
@given(hostile)
@example("[" * 100_000)
def test_ws_messages_only_raise_payload_errors(frame: Any) -> None:
    with contextlib.suppress(PayloadError):
        parse_ws_message(frame)


@FUZZ
@given(hostile)
def test_pair_lists_only_raise_payload_errors(body: Any) -> None:
    _only_parser_errors(parse_pair_list, body)


@FUZZ
@given(
    st.one_of(st.text(max_size=60), json_values, st.text(max_size=20).map(lambda s: f"trade:{s}"))
)
def test_candle_keys_only_raise_payload_errors(key: Any) -> None:
    try:
        pair, tf = parse_candle_key(key)
    except PayloadError:
        return
    assert isinstance(pair, str)
    assert isinstance(tf, str)


@FUZZ
@given(st.integers(100, 599), hostile)
def test_classification_never_raises(status: int, body: Any) -> None:
    assert isinstance(classify_http_error(status, body), MarketDataError)


@FUZZ
@given(st.lists(json_values, max_size=9), timeframes)
def test_random_rows_only_raise_payload_errors(row: list[Any], tf: str) -> None:
    with contextlib.suppress(PayloadError):
        parse_candle_row(row, "BTCUSD", tf, NOW)


# Rows that look right (six numbers, a time near now) but may hold invalid values.
def _aligned_times(tf: str) -> st.SearchStrategy[int]:
    return st.integers(0, 400).map(lambda k: _back(align(NOW, tf), tf, k))


def _back(ts: int, tf: str, k: int) -> int:
    for _ in range(k):
        ts = align(ts - 1, tf)
    return ts


plausible_numbers = st.one_of(
    st.floats(min_value=-10.0, max_value=1e6, allow_nan=False),
    st.sampled_from([0, 0.0, -1, float("nan"), float("inf"), -float("inf"), 10**400, True]),
    st.integers(-5, 10**6),
)


@st.composite
def plausible_rows(draw: st.DrawFn) -> tuple[str, list[Any]]:
    tf = draw(timeframes)
    ts = draw(
        st.one_of(
            _aligned_times(tf),
            st.integers(0, NOW + 10**9),  # misaligned or in the future, mostly
            st.sampled_from(
                [NOW, align(NOW, tf), next_open(NOW, tf), -60_000, float(align(NOW, tf))]
            ),
        )
    )
    values = [draw(plausible_numbers) for _ in range(5)]
    return tf, [ts, *values]


def _valid(tf: str, row: list[Any]) -> bool:
    ts, *values = row
    if isinstance(ts, float) and ts.is_integer():
        ts = int(ts)
    if isinstance(ts, bool) or not isinstance(ts, int):
        return False
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return False
    if any(isinstance(v, int) and abs(v) > 10**300 for v in values):
        return False
    open_, close, high, low, volume = (float(v) for v in values)
    return (
        all(math.isfinite(v) for v in (open_, close, high, low, volume))
        and 0 <= ts <= NOW + CLOCK_SKEW_MS
        and align(ts, tf) == ts
        and min(open_, close, high, low) > 0
        and volume >= 0
        and high >= low
    )


@settings(max_examples=400, deadline=None)
@given(plausible_rows())
def test_plausible_rows_are_accepted_exactly_when_valid(case: tuple[str, list[Any]]) -> None:
    tf, row = case
    try:
        candle = parse_candle_row(row, "BTCUSD", tf, NOW)
    except PayloadError:
        assert not _valid(tf, row), f"valid row refused: {row}"
        return
    assert _valid(tf, row), f"invalid row accepted: {row}"
    # Field order: [MTS, OPEN, CLOSE, HIGH, LOW, VOLUME].
    assert (candle.ts, candle.open, candle.close, candle.high, candle.low, candle.volume) == (
        int(row[0]),
        *(float(v) for v in row[1:]),
    )
    assert candle.final == (next_open(candle.ts, tf) <= NOW)
    assert candle.problem() is None


@settings(max_examples=100, deadline=None)
@given(st.lists(plausible_rows(), min_size=1, max_size=30))
def test_a_page_keeps_every_valid_row_and_refuses_the_rest(
    cases: list[tuple[str, list[Any]]],
) -> None:
    rows = [row for _, row in cases]
    body = (
        json.dumps(rows, allow_nan=True)
        if not any(isinstance(v, int) and abs(v) > 10**300 for r in rows for v in r)
        else rows
    )
    tf = cases[0][0]  # the page's timeframe; other rows' times may be misaligned for it
    page = parse_rest_candles(body, "BTCUSD", tf, NOW)
    assert page.raw_count == len(rows)
    assert len(page.candles) + page.rejected_count == len(rows)
    assert len(page.candles) == sum(_valid(tf, r) for r in rows)
    for candle in page.candles:
        assert candle.problem() is None
        assert candle.final == (next_open(candle.ts, tf) <= NOW)


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
def test_deep_nesting_inside_a_row_is_refused(depth: int) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = [nested]
    page = parse_rest_candles(
        [[NOW - 60_000, nested, 1, 1, 1, 1], [NOW - 60_000, 1, 1, 1, 1, 1]], "BTCUSD", "1m", NOW
    )
    assert len(page.candles) == 1
    assert page.rejected_count == 1
