"""Bitfinex v2 WebSocket frames -> typed events. Pure: no I/O.

A frame is either an event object (`{"event": "info", ...}`, `subscribed`, `error`, `pong`, ...)
or a channel message `[chanId, payload]`: `"hb"` is a heartbeat, an array of rows a candle
snapshot, a single row a candle update. Trailing seq/timestamp elements (conf flags) are ignored.
Candle rows are handed on as sent; wire.parse_candle_rows turns them into candles.
Malformed frames raise `PayloadError` and nothing else; decoding and the bounded log text of
hostile values are wire.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from market_data.errors import PayloadError
from market_data.exchanges.bitfinex.wire import _as_int, _dumps, _loads


@dataclass(frozen=True, slots=True)
class InfoEvent:
    version: int | None
    code: int | None
    msg: str
    platform_status: int | None


@dataclass(frozen=True, slots=True)
class ConfAck:
    status: str
    flags: int


@dataclass(frozen=True, slots=True)
class SubscribedEvent:
    chan_id: int
    channel: str
    key: str | None
    sub_id: str | None


@dataclass(frozen=True, slots=True)
class UnsubscribedEvent:
    chan_id: int
    status: str


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: int | None
    msg: str
    chan_id: int | None
    key: str | None
    channel: str | None
    sub_id: str | None = None


@dataclass(frozen=True, slots=True)
class PongEvent:
    cid: int | None
    ts: int | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    chan_id: int


@dataclass(frozen=True, slots=True)
class CandleSnapshot:
    """Rows as sent (newest first); convert with parse_candle_rows for the channel's series."""

    chan_id: int
    rows: Sequence[Any]


@dataclass(frozen=True, slots=True)
class CandleUpdate:
    chan_id: int
    row: Sequence[Any]


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A well-formed frame we have no use for (other events, trade `te`/`tu`, checksums)."""

    description: str


WsEvent = (
    InfoEvent
    | ConfAck
    | SubscribedEvent
    | UnsubscribedEvent
    | ErrorEvent
    | PongEvent
    | Heartbeat
    | CandleSnapshot
    | CandleUpdate
    | UnknownFrame
)


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise PayloadError(f"expected text, got {_dumps(value)}")


def _chan_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"chanId is not an integer: {_dumps(value)}")
    return value


def _parse_event(msg: dict[str, Any]) -> WsEvent:
    event = msg.get("event")
    if event == "info":
        platform = msg.get("platform")
        status = _as_int(platform.get("status")) if isinstance(platform, dict) else None
        return InfoEvent(
            _as_int(msg.get("version")),
            _as_int(msg.get("code")),
            _opt_str(msg.get("msg")) or "",
            status,
        )
    if event == "conf":
        flags = _as_int(msg.get("flags"))
        return ConfAck(_opt_str(msg.get("status")) or "", flags if flags is not None else 0)
    if event == "subscribed":
        channel = _opt_str(msg.get("channel"))
        if channel is None:
            raise PayloadError("subscribed event without a channel")
        return SubscribedEvent(
            _chan_id(msg.get("chanId")),
            channel,
            _opt_str(msg.get("key")),
            _opt_str(msg.get("subId")),
        )
    if event == "unsubscribed":
        return UnsubscribedEvent(_chan_id(msg.get("chanId")), _opt_str(msg.get("status")) or "")
    if event == "error":
        chan = msg.get("chanId")
        return ErrorEvent(
            _as_int(msg.get("code")),
            _opt_str(msg.get("msg")) or "",
            None if chan is None else _chan_id(chan),
            _opt_str(msg.get("key")),
            _opt_str(msg.get("channel")),
            _opt_str(msg.get("subId")),
        )
    if event == "pong":
        return PongEvent(_as_int(msg.get("cid")), _as_int(msg.get("ts")))
    if isinstance(event, str):
        return UnknownFrame(f"event {_dumps(event)}")
    raise PayloadError(f"object frame without an event: {_dumps(msg)}")


def parse_ws_message(message: str | bytes | object) -> WsEvent:
    """One WebSocket frame -> event. Trailing seq/timestamp elements are ignored."""
    obj = _loads(message)
    if isinstance(obj, dict):
        return _parse_event(obj)
    if not isinstance(obj, list) or len(obj) < 2:
        raise PayloadError(f"frame is not an event or [chanId, payload]: {_dumps(obj)}")
    chan_id = _chan_id(obj[0])
    payload = obj[1]
    if payload == "hb":
        return Heartbeat(chan_id)
    if isinstance(payload, str):
        return UnknownFrame(f"channel {chan_id} {_dumps(payload)}")
    if not isinstance(payload, list):
        raise PayloadError(f"channel {chan_id} payload is not an array: {_dumps(payload)}")
    if not payload or isinstance(payload[0], list):
        if not all(isinstance(row, list) for row in payload):
            raise PayloadError(f"channel {chan_id} snapshot mixes rows and values")
        return CandleSnapshot(chan_id, payload)
    return CandleUpdate(chan_id, payload)
