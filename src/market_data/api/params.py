"""Query parameter parsing shared by the routes: symbols, timeframes and times.

A bad value raises FastAPI's `RequestValidationError`, so every bad parameter gets the same 422
body FastAPI gives for its own checks: `{"detail": [{"loc": ["query", "<name>"], "msg": ...}]}`.

Every time parameter of every endpoint goes through `parse_time` (declare it as `TimeQuery`), so
they all accept the same forms and refuse the same garbage.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from market_data.models import SymbolError, canonical_symbol
from market_data.timeframes import TimeframeError, parse_timeframe

# Times outside [1970, 2200] are typos or probes, not candles: refusing them keeps every later
# step (period math, formatting, the database's own date range) far from its limits.
MIN_TIME_MS = 0
MAX_TIME_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# ASCII digits only: `\d` and int() also take Arabic-Indic or full-width digits.
_EPOCH_MS = re.compile(r"[0-9]{1,16}")
_EXPECTED = "expected ISO 8601 (2026-02-05T20:00:00Z) or epoch milliseconds, in ASCII"
_OUT_OF_RANGE = "must be between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z"

TIME_HELP = (
    "ISO 8601 (2026-02-05T20:00:00Z, 2026-02-05; no offset means UTC) or epoch milliseconds,"
    " 1970 to 2200"
)
# A time query parameter as every endpoint declares it; parse it with `parse_time(name, value)`.
TimeQuery = Annotated[str | None, Query(max_length=40, description=TIME_HELP)]


def bad_parameter(name: str, message: str, value: object = None) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", name), "msg": message, "type": "value_error", "input": value}]
    )


def parse_symbol(name: str, value: str) -> str:
    try:
        return canonical_symbol(value)
    except SymbolError as exc:
        raise bad_parameter(name, str(exc), value) from None


def parse_tf(name: str, value: str) -> str:
    try:
        return parse_timeframe(value)
    except TimeframeError as exc:
        raise bad_parameter(name, str(exc), value) from None


def parse_time(name: str, value: str) -> int:
    """ISO 8601 (`2026-02-05T20:00:00Z`, `2026-02-05`, offsets; naive means UTC) or epoch ms,
    in ASCII, between 1970 and 2200; anything else is a 422 naming `name`."""
    text = value.strip()
    if not text.isascii():
        raise bad_parameter(name, _EXPECTED, value)
    if _EPOCH_MS.fullmatch(text):
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except (ValueError, OverflowError):
            raise bad_parameter(name, _EXPECTED, value) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Exact integer arithmetic: no float rounding, no platform limits of timestamp().
        ms = (parsed - _EPOCH) // _ONE_MS
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise bad_parameter(name, _OUT_OF_RANGE, value)
    return ms
