"""The pure Bitfinex parsers over every recorded payload in tests/fixtures/bitfinex/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from market_data.errors import (
    ExchangeRequestError,
    ExchangeUnavailable,
    PayloadError,
    RateLimited,
    UnknownSymbol,
)
from market_data.exchanges.bitfinex import wire as bfx
from market_data.exchanges.bitfinex.frames import (
    CandleSnapshot,
    CandleUpdate,
    ConfAck,
    ErrorEvent,
    Heartbeat,
    InfoEvent,
    PongEvent,
    SubscribedEvent,
    UnknownFrame,
    UnsubscribedEvent,
    parse_ws_message,
)
from market_data.exchanges.bitfinex.pairs import pair_for_symbol, parse_pair_list
from market_data.exchanges.bitfinex.wire import (
    candle_key,
    classify_http_error,
    parse_candle_key,
    parse_candle_row,
    parse_candle_rows,
    parse_rest_candles,
)
from market_data.timeframes import is_aligned

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bitfinex"
NOW = 1_900_000_000_000  # after every recording
ALL_FILES = sorted(p.name for p in FIXTURES.iterdir() if p.name != "README.md")


def _ws_frames(name: str) -> list[str]:
    """Received frames of a jsonl recording, as the text that came off the wire."""
    frames = []
    for line in (FIXTURES / name).read_text().splitlines():
        entry = json.loads(line)
        if isinstance(entry, dict) and "raw" in entry:
            frames.append(entry["raw"])
        elif isinstance(entry, dict) and "dir" in entry:
            continue  # sent frames and connects
        else:
            frames.append(line)  # bbgo: the raw frame itself
    return frames


# --- REST candle bodies -----------------------------------------------------------------

REST_CANDLE_FILES = [n for n in ALL_FILES if n.startswith("rest_candles") and ".http." not in n]
KNOWN_ROWS: dict[str, tuple[str, int, int, dict[str, float]]] = {
    # file: (timeframe, expected rows, index, values of that row)
    "rest_candles_hist_tBTCUSD_1m_3candles_2018-01-01_arthurk.json": (
        "1m",
        3,
        2,
        {
            "ts": 1514764800000,
            "open": 13763,
            "close": 13753,
            "high": 13788,
            "low": 13752.18233851,
            "volume": 5.13326771,
        },
    ),
    "rest_candles_hist_tBTCUSD_1m_limit0_2025-08-10_bbgo.json": (
        "1m",
        120,
        3,
        {
            "ts": 1754820420000,
            "open": 118320,
            "close": 118280,
            "high": 118320,
            "low": 118280,
            "volume": 0.015486090000000001,
        },
    ),
    "rest_candles_hist_tBTCUSD_1m_noparams_2018-02-10_arthurk.json": (
        "1m",
        120,
        0,
        {
            "ts": 1518272040000,
            "open": 8791,
            "close": 8782.1,
            "high": 8795.8,
            "low": 8775.8,
            "volume": 20.01209543,
        },
    ),
    "rest_candles_hist_tBTCUSD_1m_sparse_2013-04-01_zombie3000.json": (
        "1m",
        20,
        15,
        {
            "ts": 1364778720000,
            "open": 93.48001,
            "close": 93.48797,
            "high": 93.48797,
            "low": 93.2,
            "volume": 9.81440658,
        },
    ),
    "rest_candles_hist_tBTCUST_1h_limit1_ccxt.json": (
        "1h",
        1,
        0,
        {
            "ts": 1552298400000,
            "open": 3870.1,
            "close": 3890,
            "high": 3890,
            "low": 3870.1,
            "volume": 0.05,
        },
    ),
}


def test_every_fixture_file_is_covered() -> None:
    handled = (
        set(REST_CANDLE_FILES)
        | set(PAIR_FILES)
        | set(WS_FILES)
        | {
            "rest_error_payloads_observed.json",
            "rest_candles_hist_tBTCUSD_1m_limit0_2025-08-10_bbgo.http.json",
        }
    )
    assert set(ALL_FILES) == handled
    assert set(KNOWN_ROWS) == set(REST_CANDLE_FILES)


@pytest.mark.parametrize("name", REST_CANDLE_FILES)
def test_rest_candle_bodies_parse_in_field_order(name: str) -> None:
    tf, count, index, values = KNOWN_ROWS[name]
    page = parse_rest_candles((FIXTURES / name).read_bytes(), "BTCUSD", tf, NOW)
    assert page.rejected == []
    assert page.rejected_count == 0
    assert len(page.candles) == page.raw_count == count
    candle = page.candles[index]
    got = {k: getattr(candle, k) for k in values}
    assert got == pytest.approx(values)
    for c in page.candles:
        assert c.symbol == "BTCUSD"
        assert c.timeframe == tf
        assert c.final
        assert c.low <= c.high
        assert is_aligned(c.ts, tf)
    assert page.min_ts == min(c.ts for c in page.candles)
    assert page.max_ts == max(c.ts for c in page.candles)


def test_rest_body_from_text_and_object_forms_agree() -> None:
    name = "rest_candles_hist_tBTCUSD_1m_3candles_2018-01-01_arthurk.json"
    raw = (FIXTURES / name).read_bytes()
    from_bytes = parse_rest_candles(raw, "BTCUSD", "1m", NOW)
    assert parse_rest_candles(raw.decode(), "BTCUSD", "1m", NOW) == from_bytes
    assert parse_rest_candles(json.loads(raw), "BTCUSD", "1m", NOW) == from_bytes


def test_recorded_http_envelope_points_at_a_parsable_body() -> None:
    meta = json.loads(
        (FIXTURES / "rest_candles_hist_tBTCUSD_1m_limit0_2025-08-10_bbgo.http.json").read_text()
    )
    assert meta["response"]["status_code"] == 200
    recorded_at = 1754820860000  # 2025-08-10 10:14:20 UTC, when the request was made
    page = parse_rest_candles(
        (FIXTURES / meta["body_file"]).read_bytes(), "BTCUSD", "1m", recorded_at
    )
    assert len(page.candles) == 120
    # Newest first, and the newest (10:12) had closed by 10:14:20.
    assert page.candles[0].ts > page.candles[-1].ts
    assert all(c.final for c in page.candles)


def test_last_endpoint_bare_row_and_empty_body() -> None:
    page = parse_rest_candles("[1552298400000,3870.1,3890,3890,3870.1,0.05]", "BTCUSD", "1h", NOW)
    assert [c.close for c in page.candles] == [3890.0]
    empty = parse_rest_candles(b"[]", "BTCUSD", "1h", NOW)
    assert empty.candles == []
    assert empty.raw_count == 0
    assert empty.max_ts is None


def test_open_candle_is_not_final_and_future_is_rejected() -> None:
    ts = 1_700_000_040_000  # a minute open
    row = [ts, 1, 1, 1, 1, 1]
    assert parse_candle_row(row, "BTCUSD", "1m", ts + 59_999).final is False
    assert parse_candle_row(row, "BTCUSD", "1m", ts + 60_000).final is True
    # A clock a little behind the exchange's still takes its new open candle.
    assert parse_candle_row(row, "BTCUSD", "1m", ts - 1_000).final is False
    with pytest.raises(PayloadError, match="future"):
        parse_candle_row(row, "BTCUSD", "1m", ts - 60_000)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ([1_700_000_040_000, 1, 1, 2, 3, 1], "below low"),
        ([1_700_000_040_000, 1, 1, 1, 1, -1], "negative"),
        ([1_700_000_040_001, 1, 1, 1, 1, 1], "aligned"),
        ([1_700_000_040_000, 1, 1, 1, 1], "fields"),
        ([1_700_000_040_000, 1, 1, 1, 1, 1, 7], "fields"),
        ([1_700_000_040_000, "1", 1, 1, 1, 1], "not a number"),
        ([1_700_000_040_000, True, 1, 1, 1, 1], "not a number"),
        ([1_700_000_040_000, 1, 1, 1, 1, None], "not a number"),
        ([1_700_000_040_000, float("nan"), 1, 1, 1, 1], "finite"),
        ([1_700_000_040_000, 1, float("inf"), 1, 1, 1], "finite"),
        ([1_700_000_040_000, 10**400, 1, 1, 1, 1], "range"),
        ([1_700_000_040_000, 0, 1, 1, 1, 1], "zero or negative"),
        (["1700000040000", 1, 1, 1, 1, 1], "integer"),
        ([-60_000, 1, 1, 1, 1, 1], "negative"),
        ({"mts": 1}, "array"),
    ],
)
def test_bad_rows_are_rejected_individually(row: Any, reason: str) -> None:
    good = [1_700_000_100_000, 2, 3, 4, 1, 5]
    page = parse_candle_rows([good, row, good], "BTCUSD", "1m", NOW)
    assert len(page.candles) == 2
    assert page.raw_count == 3
    assert page.rejected_count == 1
    assert reason in page.rejected[0].reason
    with pytest.raises(PayloadError, match=reason):
        parse_candle_row(row, "BTCUSD", "1m", NOW)


def test_rejected_rows_keep_their_time_and_text() -> None:
    page = parse_rest_candles("[[1700000040000,1,1,1,2,-5]]", "BTCUSD", "1m", NOW)
    assert page.candles == []
    assert page.rejected[0].ts == 1_700_000_040_000
    assert "-5" in page.rejected[0].raw
    assert page.max_ts == page.min_ts == 1_700_000_040_000


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        "",
        "[[1,2,3",
        b"\xff\xfe[]",
        "{}",
        '"text"',
        "42",
        "null",
        '{"candles": []}',
        "[" * 100_000,
    ],
)
def test_bodies_that_are_not_candle_arrays_raise_payload_error(body: Any) -> None:
    with pytest.raises(PayloadError):
        parse_rest_candles(body, "BTCUSD", "1m", NOW)


# --- error payloads -----------------------------------------------------------------------

ERRORS_FILE = "rest_error_payloads_observed.json"
EXPECTED_ERRORS = {
    "limit_invalid_2018": ExchangeRequestError,
    "ratelimit_429_2020": RateLimited,
    "maintenance_doc": ExchangeUnavailable,
    "legacy_err_rate_limit_doc": RateLimited,
}


@pytest.mark.parametrize(
    "entry", json.loads((FIXTURES / ERRORS_FILE).read_text()), ids=lambda e: e["id"]
)
def test_recorded_error_payloads_are_classified(entry: dict[str, Any]) -> None:
    expected = EXPECTED_ERRORS[entry["id"]]
    status = entry["http_status"] or 200
    assert type(classify_http_error(status, entry["body"])) is expected
    assert type(classify_http_error(status, json.dumps(entry["body"]).encode())) is expected
    if "body_text" in entry:
        assert type(classify_http_error(status, entry["body_text"])) is expected
    # The body is checked first whatever the status: the same body on a 200 candles call.
    with pytest.raises(expected):
        parse_rest_candles(json.dumps(entry["body"]), "BTCUSD", "1m", NOW)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b"", RateLimited),
        (429, b"<html>Too Many Requests</html>", RateLimited),
        (200, b'["error",11010,"ratelimit: error"]', RateLimited),
        (500, b'["error",11010,"ratelimit: error"]', RateLimited),
        (502, b"<html>Bad gateway</html>", ExchangeUnavailable),
        (503, b"", ExchangeUnavailable),
        (500, b'["error",10020,"limit: invalid"]', ExchangeRequestError),
        (500, b'["error",20060,"maintenance"]', ExchangeUnavailable),
        (500, b'["error",10001,"generic"]', ExchangeUnavailable),
        (400, b'["error",10001,"symbol: invalid"]', ExchangeRequestError),
        (404, b"Not Found", ExchangeRequestError),
        (200, b'["error","11010","ratelimit: error"]', RateLimited),
        (200, b'["error",99999,"something new"]', ExchangeUnavailable),
    ],
)
def test_http_errors_are_classified(status: int, body: bytes, expected: type) -> None:
    assert type(classify_http_error(status, body)) is expected


# --- pair lists ---------------------------------------------------------------------------

PAIR_FILES = [n for n in ALL_FILES if n.startswith("rest_conf")]


@pytest.mark.parametrize("name", PAIR_FILES)
def test_pair_lists_parse_with_colon_pairs(name: str) -> None:
    pairs = parse_pair_list((FIXTURES / name).read_bytes())
    assert len(pairs) > 250
    assert all(isinstance(p, str) for p in pairs)
    assert "BTCUSD" in pairs
    assert "AAVE:USD" in pairs
    assert "TESTBTC:TESTUSD" in pairs
    assert pair_for_symbol("btcusd", pairs) == "BTCUSD"
    assert pair_for_symbol("AAVEUSD", pairs) == "AAVE:USD"
    with pytest.raises(UnknownSymbol):
        pair_for_symbol("NOPEUSD", pairs)


def test_doge_is_listed_with_a_colon_in_2025() -> None:
    pairs = parse_pair_list(
        (FIXTURES / "rest_conf_pub_info_pair_2025-08-10_bbgo.json").read_bytes()
    )
    assert "DOGE:USD" in pairs
    assert pair_for_symbol("DOGEUSD", pairs) == "DOGE:USD"
    assert pair_for_symbol("tDOGE:USD", pairs) == "DOGE:USD"
    assert pair_for_symbol("DOGEUSD", {"DOGEUSD": "DOGE:USD"}) == "DOGE:USD"
    with pytest.raises(UnknownSymbol):
        pair_for_symbol("not a pair!", pairs)


@pytest.mark.parametrize("body", ["[]", '["BTCUSD"]', "[[1, 2]]", "{}", "[[], []]", "<html>"])
def test_bad_pair_lists_raise_payload_error(body: str) -> None:
    with pytest.raises(PayloadError):
        parse_pair_list(body)


# --- keys ---------------------------------------------------------------------------------


def test_candle_keys_round_trip() -> None:
    assert candle_key("BTCUSD", "1m") == "trade:1m:tBTCUSD"
    assert candle_key("DOGE:USD", "1h") == "trade:1h:tDOGE:USD"
    assert candle_key("tDOGE:USD", "1d") == "trade:1D:tDOGE:USD"
    assert candle_key("BTCUSD", "1W") == "trade:1W:tBTCUSD"
    assert candle_key("BTCUSD", "1M") == "trade:1M:tBTCUSD"
    for pair, tf in [
        ("BTCUSD", "1m"),
        ("DOGE:USD", "1h"),
        ("TESTBTC:TESTUSD", "14d"),
        ("ETHUSD", "1M"),
        ("ETHUSD", "1w"),
    ]:
        assert parse_candle_key(candle_key(pair, tf)) == (pair, tf)


@pytest.mark.parametrize(
    "key",
    [
        "trade:1m:fUSD:a30:p2:p30",
        "trade::5m::tBTCUSD",
        "candles",
        "trade:4h:tBTCUSD",
        "trade:1m:t",
        "trade:1x:tBTCUSD",
        7,
    ],
)
def test_bad_candle_keys(key: Any) -> None:
    with pytest.raises(PayloadError):
        parse_candle_key(key)


def test_derived_timeframes_have_no_key() -> None:
    with pytest.raises(ValueError, match="derived"):
        candle_key("BTCUSD", "4h")


# --- WebSocket frames ---------------------------------------------------------------------

WS_FILES = [n for n in ALL_FILES if n.startswith("ws_")]


@pytest.mark.parametrize("name", WS_FILES)
def test_every_recorded_ws_frame_parses(name: str) -> None:
    events = [parse_ws_message(frame) for frame in _ws_frames(name)]
    assert events
    kinds = {type(e) for e in events}
    assert kinds <= {
        InfoEvent,
        ConfAck,
        SubscribedEvent,
        ErrorEvent,
        Heartbeat,
        CandleSnapshot,
        CandleUpdate,
        UnknownFrame,
    }
    if name.startswith("ws_session"):
        info = events[0]
        assert isinstance(info, InfoEvent)
        assert info.version == 2
        assert info.platform_status == 1
        subscribed = [e for e in events if isinstance(e, SubscribedEvent)]
        assert subscribed
        assert all(e.chan_id > 0 for e in subscribed)
        chans = {e.chan_id for e in subscribed}
        beats = [e for e in events if isinstance(e, Heartbeat)]
        assert beats
        assert {b.chan_id for b in beats} <= chans


def test_seq_all_session_conf_ack_and_trailing_sequence_numbers() -> None:
    frames = _ws_frames("ws_session_ticker_book_trades_SEQ_ALL_2021-04-17_cryptofeed.jsonl")
    events = [parse_ws_message(f) for f in frames]
    assert ConfAck("OK", 65536) in events
    hb_frames = [json.loads(f) for f in frames if '"hb"' in f]
    assert hb_frames
    assert all(len(f) == 3 for f in hb_frames)
    assert parse_ws_message(hb_frames[0]) == Heartbeat(hb_frames[0][0])


def test_candle_snapshot_newest_first_and_update() -> None:
    snap, update = (
        parse_ws_message(f) for f in _ws_frames("ws_candles_ccxt_pro_comment_examples.jsonl")
    )
    assert isinstance(snap, CandleSnapshot)
    assert snap.chan_id == 341527
    page = parse_candle_rows(snap.rows, "ETHUSD", "1m", NOW)
    assert [c.ts for c in page.candles] == sorted((c.ts for c in page.candles), reverse=True)
    first = page.candles[0]
    assert (first.open, first.close, first.high, first.low) == (1802.6, 1800.3, 1802.8, 1800.3)
    assert isinstance(update, CandleUpdate)
    assert update.chan_id == 211171
    candle = parse_candle_row(update.row, "ETHUSD", "1m", NOW)
    assert (candle.close, candle.high, candle.low) == (1802.4, 1802.9, 1800.4)


def test_docs_candle_session() -> None:
    events = [parse_ws_message(f) for f in _ws_frames("ws_candles_docs_example.jsonl")]
    assert events[0] == SubscribedEvent(343351, "candles", "trade:1m:tBTCUSD", None)
    assert parse_candle_key(events[0].key or "") == ("BTCUSD", "1m")
    assert isinstance(events[1], CandleSnapshot)
    assert len(events[1].rows) == 1
    assert isinstance(events[2], CandleUpdate)
    assert parse_candle_row(events[2].row, "BTCUSD", "1m", NOW).volume == 41.63633658


def test_error_frame() -> None:
    (event,) = (parse_ws_message(f) for f in _ws_frames("ws_error_frames_observed.jsonl"))
    assert event == ErrorEvent(10301, "subscribe: dup", None, None, "ticker")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            '{"event":"info","code":"20051","msg":"Stopping"}',
            InfoEvent(None, 20051, "Stopping", None),
        ),
        (
            '{"event":"info","code":20060,"msg":"maintenance"}',
            InfoEvent(None, 20060, "maintenance", None),
        ),
        ('{"event":"info","version":2,"platform":{"status":0}}', InfoEvent(2, None, "", 0)),
        (
            '{"event":"subscribed","channel":"candles","chanId":7,"key":"trade:1m:tDOGE:USD",'
            '"subId":"abc"}',
            SubscribedEvent(7, "candles", "trade:1m:tDOGE:USD", "abc"),
        ),
        ('{"event":"unsubscribed","status":"OK","chanId":7}', UnsubscribedEvent(7, "OK")),
        (
            '{"event":"error","msg":"subscribe: limit","code":10305,"channel":"candles",'
            '"key":"trade:1m:tBTCUSD","subId":"s1"}',
            ErrorEvent(10305, "subscribe: limit", None, "trade:1m:tBTCUSD", "candles", "s1"),
        ),
        (
            '{"event":"error","msg":"subscribe: dup","code":10301,"chanId":9}',
            ErrorEvent(10301, "subscribe: dup", 9, None, None),
        ),
        ('{"event":"pong","ts":1511545528111,"cid":1234}', PongEvent(1234, 1511545528111)),
        ("[7,[]]", CandleSnapshot(7, [])),
        ("[7,[],42,1700000000000]", CandleSnapshot(7, [])),
        ("[7,[1700000040000,1,1,1,1,1],42]", CandleUpdate(7, [1700000040000, 1, 1, 1, 1, 1])),
        ('[7,"hb",3]', Heartbeat(7)),
        ('[7,"te",[1,2,3,4],5]', UnknownFrame("channel 7 te")),
        ('{"event":"auth","status":"OK"}', UnknownFrame("event auth")),
    ],
)
def test_ws_frames(frame: str, expected: object) -> None:
    assert parse_ws_message(frame) == expected


@pytest.mark.parametrize(
    "frame",
    [
        "[]",
        "[7]",
        '["7",[]]',
        "[true,[]]",
        "[7,{}]",
        "[7,null]",
        "[7,[[1],2]]",
        '{"no":"event"}',
        '{"event":"subscribed","chanId":"x","channel":"candles"}',
        '{"event":"subscribed"}',
        '{"event":"error","msg":["x"]}',
        "not json",
        b"\xc3\x28",
        "3",
        "[" * 50_000,
    ],
)
def test_malformed_ws_frames_raise_payload_error(frame: str | bytes) -> None:
    with pytest.raises(PayloadError):
        parse_ws_message(frame)


def test_constants() -> None:
    assert bfx.REST_MAX_LIMIT == 10_000
    assert bfx.REST_DEFAULT_LIMIT == 120
    assert bfx.DEFAULT_REST_URL == "https://api-pub.bitfinex.com"
    assert bfx.DEFAULT_WS_URL == "wss://api-pub.bitfinex.com/ws/2"
    assert (bfx.ERR_RATE_LIMIT, bfx.ERR_PARAMS, bfx.ERR_MAINTENANCE) == (11010, 10020, 20060)
