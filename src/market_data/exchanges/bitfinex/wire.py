"""Bitfinex v2 wire knowledge: URLs, keys, payload parsers and error classification. Pure: no I/O.

Parsers here cover candle keys, candle rows (from REST or WS) and REST bodies (pages, pair lists).
WebSocket frames are parsed in frames.py, which shares this module's decoding helpers
(`_loads`, `_dumps`, `_as_int`); nothing here imports it back.

Wire facts (see docs/bitfinex-api.md in the shared spec): candle rows are
`[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]` (close before high), MTS is the period's open time in ms.
Every body may be an error array `["error", code, msg]` whatever its HTTP status, so it is
checked before anything else.

Numbers: only JSON numbers are accepted in candle rows. Strings (even numeric ones) are refused:
the daemon never sets the DEC_S/TIME_S flags, so a string there means the payload is not what we
asked for. Parsers raise `PayloadError` and nothing else for malformed input (error bodies raise
their classified `MarketDataError`); a bad row inside a good page is rejected on its own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

import orjson

from market_data.errors import (
    ExchangeRequestError,
    ExchangeUnavailable,
    MarketDataError,
    PayloadError,
    RateLimited,
)
from market_data.exchanges.base import CandlePage
from market_data.gcpause import collector_paused
from market_data.models import (
    Candle,
    RejectedRow,
    SymbolError,
    canonical_symbol,
)
from market_data.timeframes import (
    ALL_TIMEFRAMES,
    TimeframeError,
    align,
    duration_ms,
    from_exchange,
    is_fixed,
    next_open,
    parse_timeframe,
    to_exchange,
)

DEFAULT_REST_URL = "https://api-pub.bitfinex.com"
DEFAULT_WS_URL = "wss://api-pub.bitfinex.com/ws/2"
CANDLES_PATH = "/v2/candles/{key}/hist"
PAIR_LIST_PATH = "/v2/conf/pub:list:pair:exchange"
REST_MAX_LIMIT = 10_000
REST_DEFAULT_LIMIT = 120  # what the server sends when no limit is given (docs say 100)
MAX_BODY_BYTES = 32 * 1024 * 1024  # a full 10,000-row page is under 1 MiB
MAX_PAIRS = 20_000
MAX_REJECTED_KEPT = 100  # rejected rows kept with their text; the rest are only counted
_RAW_TEXT_MAX = 200
# Our clock may run a little behind the exchange's: a candle that opened up to this long "after"
# now is the exchange's new open candle, not a bogus row.
CLOCK_SKEW_MS = 5_000
_INT_TEXT = re.compile(r"^-?[0-9]{1,18}$")

# Error codes (REST bodies and WS error events).
ERR_UNKNOWN = 10000
ERR_GENERIC = 10001
ERR_PARAMS = 10020
ERR_AUTH = 10100
ERR_RATE_LIMIT = 11010
ERR_MAINTENANCE = 20060
ERR_SUB_FAILED = 10300
ERR_SUB_DUPLICATE = 10301
ERR_SUB_LIMIT = 10305
ERR_UNSUB_FAILED = 10400
ERR_NOT_SUBSCRIBED = 10401
# WS info codes.
INFO_RECONNECT = 20051
INFO_MAINTENANCE_START = 20060
INFO_MAINTENANCE_END = 20061
# WS conf flags.
FLAG_TIMESTAMP = 32_768
FLAG_SEQ_ALL = 65_536
WS_MAX_CHANNELS = 25
WS_CONNECTIONS_PER_MINUTE = 18  # Bitfinex allows 20 new connections a minute per IP


def _dumps(obj: object) -> str:
    """Short text of a hostile value for logs: bounded, never raises."""
    try:
        text = obj if isinstance(obj, str) else json.dumps(obj, allow_nan=True, default=repr)
    except (ValueError, TypeError, RecursionError, OverflowError):
        text = f"<unprintable {type(obj).__name__}>"
    return text if len(text) <= _RAW_TEXT_MAX else text[: _RAW_TEXT_MAX - 3] + "..."


def _loads(body: bytes | bytearray | str | object) -> object:
    """Decode a body; text that is not JSON raises PayloadError.

    orjson decodes the common body about twice as fast as the stdlib. It is stricter (no NaN or
    Infinity literals, 64-bit integers, nesting depth), so whatever it refuses goes through the
    stdlib path, which decides as before: a NaN row is then refused on its own, not the page.
    """
    if isinstance(body, (bytes, bytearray, str)) and len(body) <= MAX_BODY_BYTES:
        try:
            return orjson.loads(body)
        except (orjson.JSONDecodeError, RecursionError):
            pass
    return _loads_stdlib(body)


def _loads_stdlib(body: bytes | bytearray | str | object) -> object:
    if isinstance(body, (bytes, bytearray)):
        if len(body) > MAX_BODY_BYTES:
            raise PayloadError(f"body of {len(body)} bytes is too large")
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"body is not UTF-8: {exc.reason}") from None
    if not isinstance(body, str):
        return body
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(f"body of {len(body)} characters is too large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise PayloadError(f"body is not JSON ({type(exc).__name__}): {_dumps(body)}") from None


def _as_int(value: object) -> int | None:
    """A JSON integer (or an int-valued string, as WS codes sometimes arrive); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.match(value.strip()):
        return int(value)
    return None


# --- keys -----------------------------------------------------------------------------------


def candle_key(pair: str, timeframe: str) -> str:
    """`("DOGE:USD", "1d")` -> `trade:1D:tDOGE:USD`. Raises TimeframeError for derived ones."""
    pair_id = pair[1:] if pair[:1] == "t" else pair
    return f"trade:{to_exchange(parse_timeframe(timeframe))}:t{pair_id}"


def parse_candle_key(key: str) -> tuple[str, str]:
    """`trade:1h:tDOGE:USD` -> `("DOGE:USD", "1h")`. Funding and unknown keys raise PayloadError."""
    if not isinstance(key, str):
        raise PayloadError(f"candle key is not text: {_dumps(key)}")
    parts = key.split(":", 2)
    if len(parts) != 3 or parts[0] != "trade" or parts[2][:1] != "t":
        raise PayloadError(f"not a trading candle key: {_dumps(key)}")
    pair = parts[2][1:]
    try:
        timeframe = from_exchange(parts[1])
        canonical_symbol(pair)
    except (TimeframeError, SymbolError) as exc:
        raise PayloadError(f"bad candle key {_dumps(key)}: {exc}") from None
    return pair, timeframe


# --- candles --------------------------------------------------------------------------------


def _price(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"{name} is not a number: {_dumps(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise PayloadError(f"{name} is out of range") from None
    if not math.isfinite(number):
        raise PayloadError(f"{name} is not finite: {number}")
    return number


def _mts(value: object) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"MTS is not an integer: {_dumps(value)}")
    return value


def parse_candle_row(row: object, symbol: str, timeframe: str, now_ms: int) -> Candle:
    """One `[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]` row -> Candle (final once its period ended)."""
    if timeframe not in ALL_TIMEFRAMES:
        timeframe = parse_timeframe(timeframe)
    if not isinstance(row, (list, tuple)):
        raise PayloadError(f"candle row is not an array: {_dumps(row)}")
    if len(row) != 6:
        raise PayloadError(f"candle row has {len(row)} fields, not 6")
    ts = _mts(row[0])
    open_, close, high, low = (_price(row[i], n) for i, n in enumerate(_PRICES, start=1))
    volume = _price(row[5], "volume")
    if ts < 0:
        raise PayloadError(f"MTS {ts} is negative")
    if ts > now_ms + CLOCK_SKEW_MS:
        raise PayloadError(f"MTS {ts} is in the future (now {now_ms})")
    if align(ts, timeframe) != ts:
        raise PayloadError(f"MTS {ts} is not aligned to {timeframe}")
    if min(open_, close, high, low) <= 0:
        raise PayloadError("a price is zero or negative")
    if volume < 0:
        raise PayloadError(f"volume {volume} is negative")
    if high < low:
        raise PayloadError(f"high {high} is below low {low}")
    candle = Candle(
        symbol,
        timeframe,
        ts,
        open_,
        high,
        low,
        close,
        volume,
        final=next_open(ts, timeframe) <= now_ms,
    )
    problem = candle.problem()
    if problem is not None:
        raise PayloadError(problem)
    return candle


_PRICES = ("open", "close", "high", "low")
_INF = math.inf


def parse_candle_rows(
    rows: Iterable[object], symbol: str, timeframe: str, now_ms: int
) -> CandlePage:
    """Parse rows one by one: a bad row is rejected with its reason, the others still parse.

    The common row (six plain JSON numbers that parse_candle_row accepts) is checked inline,
    about 3x faster on 10,000-row backfill pages; anything else takes parse_candle_row, which
    accepts it or says why not.
    """
    timeframe = parse_timeframe(timeframe)
    candles: list[Candle] = []
    append = candles.append
    rejected: list[RejectedRow] = []
    rejected_count = raw_count = 0
    min_ts = max_ts = -1  # -1: no row with a usable MTS yet
    latest = now_ms + CLOCK_SKEW_MS
    step = duration_ms(timeframe) if is_fixed(timeframe) else 0
    offset = align(0, timeframe) % step if step else 0
    for row in rows:
        raw_count += 1
        if step and type(row) is list and len(row) == 6:
            ts, o, c, h, lo, v = row
            if type(ts) is int and 0 <= ts <= latest:
                if min_ts < 0 or ts < min_ts:
                    min_ts = ts
                if ts > max_ts:
                    max_ts = ts
                if (
                    not (ts - offset) % step
                    and (type(o) is float or type(o) is int)
                    and (type(c) is float or type(c) is int)
                    and (type(h) is float or type(h) is int)
                    and (type(lo) is float or type(lo) is int)
                    and (type(v) is float or type(v) is int)
                    and 0 < o < _INF
                    and 0 < c < _INF
                    and 0 < lo <= h < _INF
                    and 0 <= v < _INF
                ):
                    try:
                        append(
                            Candle(
                                symbol,
                                timeframe,
                                ts,
                                float(o),
                                float(h),
                                float(lo),
                                float(c),
                                float(v),
                                ts + step <= now_ms,
                            )
                        )
                        continue
                    except OverflowError:  # an integer too large for a float
                        pass
        mts: int | None = None
        if isinstance(row, (list, tuple)) and row:
            first = row[0]
            if isinstance(first, int) and not isinstance(first, bool) and 0 <= first <= latest:
                mts = first
                if min_ts < 0 or mts < min_ts:
                    min_ts = mts
                max_ts = max(max_ts, mts)
        try:
            append(parse_candle_row(row, symbol, timeframe, now_ms))
        except PayloadError as exc:
            rejected_count += 1
            if len(rejected) < MAX_REJECTED_KEPT:
                rejected.append(RejectedRow(_dumps(row), str(exc), mts))
    if max_ts < 0:
        return CandlePage(candles, raw_count, rejected, rejected_count)
    return CandlePage(candles, raw_count, rejected, rejected_count, min_ts, max_ts)


def is_error_body(obj: object) -> bool:
    """`["error", code, msg]`, or the legacy `{"error": "ERR_RATE_LIMIT"}`."""
    if isinstance(obj, list):
        return len(obj) >= 2 and obj[0] == "error"
    return isinstance(obj, dict) and "error" in obj


def parse_rest_candles(
    body: bytes | str | object, symbol: str, timeframe: str, now_ms: int
) -> CandlePage:
    """A `/hist` (`[[...], ...]`) or `/last` (`[MTS, ...]`) body -> CandlePage.

    An error body raises its classified error (RateLimited, ExchangeUnavailable,
    ExchangeRequestError); anything that is not a JSON array raises PayloadError.
    """
    with collector_paused():  # a page is tens of thousands of new objects, none cyclic
        return _parse_rest_candles(body, symbol, timeframe, now_ms)


def _parse_rest_candles(
    body: bytes | str | object, symbol: str, timeframe: str, now_ms: int
) -> CandlePage:
    obj = _loads(body)
    if is_error_body(obj):
        raise classify_http_error(200, obj)
    if not isinstance(obj, list):
        raise PayloadError(f"candles body is not an array: {_dumps(obj)}")
    if len(obj) > REST_MAX_LIMIT:
        raise PayloadError(f"candles body has {len(obj)} rows, more than {REST_MAX_LIMIT}")
    if obj and not isinstance(obj[0], list):
        obj = [obj]  # `/last` answers with one bare row
    return parse_candle_rows(obj, symbol, timeframe, now_ms)


# --- errors ---------------------------------------------------------------------------------


def classify_http_error(status: int, body: bytes | str | object) -> MarketDataError:
    """The error a response stands for. The body's error code wins over the HTTP status."""
    try:
        obj = _loads(body)
    except PayloadError:
        obj = body if isinstance(body, str) else None
    code: int | None = None
    message = ""
    if isinstance(obj, list) and len(obj) >= 2 and obj[0] == "error":
        code = _as_int(obj[1])
        message = _dumps(obj[2]) if len(obj) > 2 else ""
    elif isinstance(obj, dict) and "error" in obj:
        message = _dumps(obj.get("error"))
    elif isinstance(obj, str):
        message = _dumps(obj.strip())
    detail = (
        f"HTTP {status}"
        + (f", error {code}" if code is not None else "")
        + (f": {message}" if message else "")
    )
    lowered = message.lower()
    if code == ERR_RATE_LIMIT or status == 429 or "ratelimit" in lowered.replace("_", ""):
        return RateLimited(f"rate limited ({detail})")
    if code == ERR_MAINTENANCE or "maintenance" in lowered:
        return ExchangeUnavailable(f"exchange in maintenance ({detail})")
    if code in (ERR_PARAMS, ERR_AUTH):
        return ExchangeRequestError(f"request refused ({detail})")
    if status >= 500 or status in (408, 425):
        return ExchangeUnavailable(f"exchange error ({detail})")
    if 400 <= status < 500:
        return ExchangeRequestError(f"request refused ({detail})")
    if code is not None:
        # An error body with a 2xx status and a code we do not know: assume it passes.
        return ExchangeUnavailable(f"exchange error ({detail})")
    return PayloadError(f"unexpected response ({detail})")
