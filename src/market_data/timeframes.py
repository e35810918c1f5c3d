"""Pure time math for candle periods. Every time is an int: epoch milliseconds, UTC.
`now_ms()` is the one place the program reads the wall clock in that unit.

Bitfinex serves the native timeframes below. The others we accept are derived: aggregated from the
largest native timeframe that divides them. Week alignment is not documented by Bitfinex; we use
ISO weeks (Monday 00:00 UTC) for `1w` and two-week periods counted from Monday 1970-01-05 for `14d`,
and calendar months for `1M`; the simulator follows the same rules.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; the first Monday is four days later.
_MONDAY_EPOCH_MS = 4 * DAY_MS

NATIVE_TIMEFRAMES: tuple[str, ...] = (
    "1m",
    "5m",
    "15m",
    "30m",
    "1h",
    "3h",
    "6h",
    "12h",
    "1d",
    "1w",
    "14d",
    "1M",
)
DERIVED_TIMEFRAMES: tuple[str, ...] = ("2h", "4h", "8h")
ALL_TIMEFRAMES: tuple[str, ...] = NATIVE_TIMEFRAMES + DERIVED_TIMEFRAMES


def timeframe_order(tf: str) -> int:
    """Sort key: the order of ALL_TIMEFRAMES (1m before 1h before 1d), unknown ones last."""
    return ALL_TIMEFRAMES.index(tf) if tf in ALL_TIMEFRAMES else len(ALL_TIMEFRAMES)


_FIXED_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "3h": 3 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "1w": WEEK_MS,
    "14d": 2 * WEEK_MS,
}
_EXCHANGE_SPELLING: dict[str, str] = {"1d": "1D", "1w": "1W", "14d": "14D"}
_FROM_EXCHANGE: dict[str, str] = {v: k for k, v in _EXCHANGE_SPELLING.items()}
_SHAPE = re.compile(r"^(\d+)([mhdDwWM])$")


class TimeframeError(ValueError):
    """Not a timeframe this project knows."""


def parse_timeframe(text: str) -> str:
    """Return the canonical spelling of a timeframe.

    `1m` is a minute and `1M` a month (the case matters there, as on Bitfinex); days and weeks
    are accepted in either case (`1D`, `1d`, `1W`, `14D`); hours in either case.
    """
    raw = text.strip()
    match = _SHAPE.match(raw) if raw else None
    if match is None and raw[-1:] == "H" and raw[:-1].isdigit():
        raw = raw[:-1] + "h"
        match = _SHAPE.match(raw)
    if match is None:
        raise TimeframeError(f"unknown timeframe {text!r}; known: {', '.join(ALL_TIMEFRAMES)}")
    number, unit = match.groups()
    if unit in "DW":
        unit = unit.lower()
    canonical = f"{int(number)}{unit}"
    if canonical not in ALL_TIMEFRAMES:
        raise TimeframeError(f"unknown timeframe {text!r}; known: {', '.join(ALL_TIMEFRAMES)}")
    return canonical


def is_native(tf: str) -> bool:
    return tf in NATIVE_TIMEFRAMES


def to_exchange(tf: str) -> str:
    """Bitfinex's spelling of a native timeframe (`1d` -> `1D`)."""
    if not is_native(tf):
        raise TimeframeError(f"Bitfinex does not serve {tf}; it is derived from {source_of(tf)}")
    return _EXCHANGE_SPELLING.get(tf, tf)


def from_exchange(tf: str) -> str:
    """Our spelling of a timeframe as Bitfinex writes it (`1D` -> `1d`)."""
    if tf in _FROM_EXCHANGE:
        return _FROM_EXCHANGE[tf]
    if tf in NATIVE_TIMEFRAMES:
        return tf
    raise TimeframeError(f"Bitfinex timeframe {tf!r} is not known")


def source_of(tf: str) -> str:
    """The native timeframe a derived one is aggregated from: the largest native that divides it."""
    if is_native(tf):
        return tf
    length = _FIXED_MS[tf]
    best = max(
        (n for n in NATIVE_TIMEFRAMES if n in _FIXED_MS and length % _FIXED_MS[n] == 0),
        key=lambda n: _FIXED_MS[n],
    )
    return best


def is_fixed(tf: str) -> bool:
    """True when every period of this timeframe has the same length (all but `1M`)."""
    return tf in _FIXED_MS


def duration_ms(tf: str) -> int:
    """Length of a period. For `1M` use `next_open` instead; this raises."""
    try:
        return _FIXED_MS[tf]
    except KeyError:
        raise TimeframeError(f"{tf} has no fixed length") from None


def nominal_ms(tf: str) -> int:
    """A period's length, taking 31 days for a month: for sizing windows, never for alignment."""
    return _FIXED_MS.get(tf, 31 * DAY_MS)


def _anchor(tf: str) -> int:
    return _MONDAY_EPOCH_MS if tf in ("1w", "14d") else 0


def align(ts_ms: int, tf: str) -> int:
    """Open time of the period that contains `ts_ms`."""
    if tf == "1M":
        dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
        return int(datetime(dt.year, dt.month, 1, tzinfo=UTC).timestamp() * 1000)
    length = duration_ms(tf)
    anchor = _anchor(tf)
    return ts_ms - ((ts_ms - anchor) % length)


def ceil_open(ts_ms: int, tf: str) -> int:
    """The first period open time at or after `ts_ms` (rounds up to a period start)."""
    start = align(ts_ms, tf)
    return start if start == ts_ms else next_open(start, tf)


def is_aligned(ts_ms: int, tf: str) -> bool:
    return align(ts_ms, tf) == ts_ms


def next_open(open_ms: int, tf: str) -> int:
    """Open time of the period after the one that contains `open_ms` (its close time)."""
    if tf == "1M":
        dt = datetime.fromtimestamp(align(open_ms, tf) / 1000, UTC)
        year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return align(open_ms, tf) + duration_ms(tf)


def previous_open(open_ms: int, tf: str) -> int:
    """Open time of the period before the one that contains `open_ms`."""
    start = align(open_ms, tf)
    if tf == "1M":
        return align(start - 1, tf)
    return start - duration_ms(tf)


def is_closed(open_ms: int, tf: str, now_ms: int) -> bool:
    """A candle is closed once its period has ended."""
    return next_open(open_ms, tf) <= now_ms


def last_closed_open(now_ms: int, tf: str) -> int:
    """Open time of the newest period that has ended at `now_ms`."""
    return previous_open(now_ms, tf)


def expected_opens(start_ms: int, end_ms: int, tf: str) -> Iterator[int]:
    """Every period open time in [start_ms, end_ms), starting at the first aligned one >= start."""
    ts = align(start_ms, tf)
    if ts < start_ms:
        ts = next_open(ts, tf)
    while ts < end_ms:
        yield ts
        ts = next_open(ts, tf)


def count_periods(start_ms: int, end_ms: int, tf: str) -> int:
    """How many periods open in [start_ms, end_ms) for aligned bounds."""
    if is_fixed(tf):
        first = align(start_ms, tf)
        if first < start_ms:
            first += duration_ms(tf)
        if end_ms <= first:
            return 0
        return (end_ms - first + duration_ms(tf) - 1) // duration_ms(tf)
    return sum(1 for _ in expected_opens(start_ms, end_ms, tf))


def now_ms() -> int:
    """The wall clock, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def to_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_ts(ts_ms: int) -> str:
    """ISO 8601 UTC with a Z, as the API shows times (`2026-02-05T20:00:00Z`)."""
    return to_datetime(ts_ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_log_ts(ts_ms: int) -> str:
    """The seed's log spelling (`2026-02-05 20:00:00`)."""
    return to_datetime(ts_ms).strftime("%Y-%m-%d %H:%M:%S")
