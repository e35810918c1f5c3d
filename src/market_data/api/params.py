"""Query parameter parsing shared by the routes: symbols, timeframes and times.

A bad value raises FastAPI's `RequestValidationError`, so every bad parameter gets the same 422
body FastAPI gives for its own checks: `{"detail": [{"loc": ["query", "<name>"], "msg": ...}]}`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.exceptions import RequestValidationError

from market_data.models import SymbolError, canonical_symbol
from market_data.timeframes import TimeframeError, parse_timeframe

# Epoch ms accepted as a number: up to the year 9999, so a typo'd ISO year is not a timestamp.
_MAX_EPOCH_MS = 253_402_300_799_999
_DIGITS = re.compile(r"^\d{1,15}$")


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
    """ISO 8601 (`2026-02-05T20:00:00Z`, `2026-02-05`, offsets; naive means UTC) or epoch ms."""
    text = value.strip()
    if _DIGITS.match(text):
        ms = int(text)
        if ms > _MAX_EPOCH_MS:
            raise bad_parameter(name, "epoch milliseconds out of range", value)
        return ms
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise bad_parameter(
            name, "expected ISO 8601 (2026-02-05T20:00:00Z) or epoch milliseconds", value
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if ms < 0:
        raise bad_parameter(name, "times before 1970 are not stored", value)
    return ms
