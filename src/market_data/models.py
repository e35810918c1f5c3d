"""The project's value types: frozen dataclasses, no I/O. Times are epoch milliseconds, UTC."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from market_data.errors import InvalidCandleError
from market_data.timeframes import is_aligned

EXCHANGE = "bitfinex"

_SYMBOL_SHAPE = re.compile(r"^[A-Z0-9]{2,}(?::?[A-Z0-9]{2,})?$")


class SymbolError(ValueError):
    """Not a trading pair we can spell."""


def canonical_symbol(text: str) -> str:
    """`tDOGE:USD`, `doge:usd`, `DOGEUSD` -> `DOGEUSD`: upper case, no `t` prefix, no colon."""
    raw = text.strip()
    if len(raw) > 1 and raw[0] == "t" and raw[1:2].isupper():
        raw = raw[1:]
    raw = raw.upper()
    if len(raw) > 40 or not _SYMBOL_SHAPE.match(raw):
        raise SymbolError(f"not a trading pair: {text!r}")
    return raw.replace(":", "")


def exchange_pair_map(pairs: Iterable[str]) -> dict[str, str]:
    """Canonical symbol -> Bitfinex pair id (`DOGEUSD` -> `DOGE:USD`) from the exchange's list."""
    result: dict[str, str] = {}
    for pair in pairs:
        try:
            result[canonical_symbol(pair)] = pair
        except SymbolError:
            continue
    return result


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One stored series: a symbol at a timeframe (the exchange is implied: bitfinex)."""

    symbol: str
    timeframe: str

    def __str__(self) -> str:
        return f"{self.symbol}/{self.timeframe}"


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV period. `ts` is the period's open time; `final` is False while it may change."""

    symbol: str
    timeframe: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    final: bool = True

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.symbol, self.timeframe)

    def problem(self) -> str | None:
        """Why this candle must not be stored, or None when it is sound."""
        values = (self.open, self.high, self.low, self.close, self.volume)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "values are not numbers"
        if not all(math.isfinite(v) for v in values):
            return "values are not finite"
        if self.high < self.low:
            return f"high {self.high} is below low {self.low}"
        if self.volume < 0:
            return f"volume {self.volume} is negative"
        if not isinstance(self.ts, int) or isinstance(self.ts, bool) or self.ts < 0:
            return f"time {self.ts!r} is not a non-negative integer"
        if not is_aligned(self.ts, self.timeframe):
            return f"time {self.ts} is not aligned to {self.timeframe}"
        return None

    def validate(self) -> Candle:
        problem = self.problem()
        if problem is not None:
            raise InvalidCandleError(f"{self.series} @ {self.ts}: {problem}")
        return self

    def same_values(self, other: Candle) -> bool:
        return (self.open, self.high, self.low, self.close, self.volume) == (
            other.open,
            other.high,
            other.low,
            other.close,
            other.volume,
        )


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row refused on the way in, before it became a candle (an exchange payload row the
    parser could not accept): its text (shortened), why, and its open time when it had one."""

    raw: str
    reason: str
    ts: int | None = None


class JobType(StrEnum):
    BACKFILL = "backfill"
    GAP_DETECTION = "gap_detection"
    GAP_REPAIR = "gap_repair"
    UPDATE = "update"
    CLEANUP = "cleanup"
    WS_CATCHUP = "ws_catchup"


class JobStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class GapStatus(StrEnum):
    OPEN = "open"  # detected, not yet repaired
    REPAIRED = "repaired"  # the exchange answered with candles and they are stored
    EMPTY = "empty"  # the exchange answered and had no trades there: closed for good
    FAILED = "failed"  # repairs kept failing; retried at a slower cadence


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    exchange: str
    symbol: str | None
    timeframe: str | None
    job_type: str
    status: str
    started_at: int
    completed_at: int | None
    candles_fetched: int
    last_error: str | None
    owner: str | None = None  # the DAEMON_ID that ran it (None: a one-shot command)


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles in [gap_start, gap_end): gap_end is the open time of the next stored one."""

    id: int
    exchange: str
    symbol: str
    timeframe: str
    gap_start: int
    gap_end: int
    detected_at: int
    repaired_at: int | None
    status: str
    candles_repaired: int
    attempts: int
    next_attempt_at: int | None
    last_error: str | None

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.symbol, self.timeframe)


@dataclass(frozen=True, slots=True)
class SeriesStats:
    """What /status shows per series, kept current by the store (no count(*) per request)."""

    symbol: str
    timeframe: str
    candle_count: int
    first_ts: int | None
    last_ts: int | None
    last_final_ts: int | None
