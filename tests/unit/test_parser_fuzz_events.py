"""Hostile WebSocket events that *look* right: the known event names (info, error, subscribed,
unsubscribed, conf, pong) with every field given garbage, and channel frames with hostile
payloads. Complements test_parser_fuzz.py, whose random JSON rarely names a real event.

Only PayloadError may escape; whatever parses has the documented field types, so nothing
downstream can trip over a string where an int belongs.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_data.errors import PayloadError
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

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([20051, 20060, 20061, 10300, 10301, 10305, 11010, "20051", 1e400, -1]),
)
FIELDS = (
    "event",
    "code",
    "msg",
    "version",
    "platform",
    "chanId",
    "channel",
    "key",
    "subId",
    "status",
    "flags",
    "cid",
    "ts",
    "serverId",
    "pair",
    "symbol",
)
EVENTS = ("info", "error", "subscribed", "unsubscribed", "conf", "pong", "auth", "hb", "")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(st.dictionaries(st.sampled_from(FIELDS), garbage, max_size=8))
    body["event"] = draw(st.one_of(st.sampled_from(EVENTS), garbage))
    if draw(st.booleans()):
        body["platform"] = {"status": draw(garbage)}
    return body


frames = st.one_of(
    st.tuples(st.integers(-5, 2**40), st.sampled_from(["hb", "cs", "te", ""])).map(list),
    st.tuples(st.one_of(st.integers(), garbage), st.lists(garbage, max_size=7)).map(list),
    st.tuples(st.integers(0, 10**6), st.lists(st.lists(garbage, max_size=7), max_size=5)).map(list),
    st.lists(garbage, max_size=4),
)

_TYPES: dict[type, dict[str, tuple[type, ...]]] = {
    InfoEvent: {
        "version": (int, type(None)),
        "code": (int, type(None)),
        "msg": (str,),
        "platform_status": (int, type(None)),
    },
    ErrorEvent: {
        "code": (int, type(None)),
        "msg": (str,),
        "chan_id": (int, type(None)),
        "key": (str, type(None)),
        "channel": (str, type(None)),
        "sub_id": (str, type(None)),
    },
    SubscribedEvent: {
        "chan_id": (int,),
        "channel": (str,),
        "key": (str, type(None)),
        "sub_id": (str, type(None)),
    },
    UnsubscribedEvent: {"chan_id": (int,), "status": (str,)},
    ConfAck: {"status": (str,), "flags": (int,)},
    PongEvent: {"cid": (int, type(None)), "ts": (int, type(None))},
    Heartbeat: {"chan_id": (int,)},
}


def _check_types(parsed: object) -> None:
    for name, allowed in _TYPES.get(type(parsed), {}).items():
        value = getattr(parsed, name)
        assert isinstance(value, allowed), (name, value, parsed)
        assert not isinstance(value, bool), (name, value, parsed)


def _parse_all_forms(message: Any) -> None:
    text = json.dumps(message, allow_nan=True)
    for form in (message, text, text.encode()):
        try:
            parsed = parse_ws_message(form)
        except PayloadError:
            continue
        assert isinstance(
            parsed,
            (
                InfoEvent,
                ErrorEvent,
                SubscribedEvent,
                UnsubscribedEvent,
                ConfAck,
                PongEvent,
                Heartbeat,
                CandleSnapshot,
                CandleUpdate,
                UnknownFrame,
            ),
        ), parsed
        _check_types(parsed)


@FUZZ
@given(events())
def test_hostile_events_parse_to_typed_events_or_payload_errors(message: dict[str, Any]) -> None:
    _parse_all_forms(message)


@FUZZ
@given(frames)
def test_hostile_channel_frames_parse_or_raise_payload_errors(message: list[Any]) -> None:
    _parse_all_forms(message)


def test_the_real_info_and_error_events_still_parse() -> None:
    info = parse_ws_message('{"event":"info","code":20051,"msg":"Stopping"}')
    assert isinstance(info, InfoEvent)
    assert info.code == 20051
    error = parse_ws_message('{"event":"error","msg":"subscribe: dup","code":10301,"chanId":7}')
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.chan_id) == (10301, 7)
