"""Turning a caller's candles into what the writers need: valid rows, one per key, per series,
ascending. Pure code, no I/O.

Validation runs on every row of every page, so the common case (float values, int time) is
checked inline; anything unusual falls back to `Candle.problem()`, which stays the one rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from market_data.models import Candle
from market_data.storage.base import Rejected
from market_data.timeframes import align, duration_ms, is_fixed

_INF = float("inf")


@dataclass(slots=True)
class SeriesBatch:
    """The deduplicated candles of one series, ascending by ts (never empty)."""

    symbol: str
    timeframe: str
    candles: list[Candle]

    @property
    def first_ts(self) -> int:
        return self.candles[0].ts

    @property
    def last_ts(self) -> int:
        return self.candles[-1].ts

    @property
    def last_final_ts(self) -> int | None:
        for candle in reversed(self.candles):
            if candle.final:
                return candle.ts
        return None

    def chunks(self, size: int) -> list[SeriesBatch]:
        return [
            SeriesBatch(self.symbol, self.timeframe, self.candles[i : i + size])
            for i in range(0, len(self.candles), size)
        ]


def _reason(candle: Candle) -> str | None:
    try:
        return candle.problem()
    except (ValueError, TypeError) as exc:  # an unknown timeframe, a malformed field
        return str(exc) or type(exc).__name__


def _grid(timeframe: str) -> tuple[int, int] | None:
    """(step, anchor) for the inline alignment check, or None to defer to Candle.problem()."""
    try:
        if not is_fixed(timeframe):
            return None
        return duration_ms(timeframe), align(0, timeframe)
    except ValueError:
        return None


def prepare(candles: Iterable[Candle]) -> tuple[list[SeriesBatch], list[Rejected]]:
    """Valid candles grouped by series, one per key (the last wins, except that a non-final
    row never displaces a final one: the same rule the database applies), ascending by ts."""
    groups: dict[tuple[str, str], dict[int, Candle]] = {}
    grids: dict[str, tuple[int, int] | None] = {}
    rejected: list[Rejected] = []
    last_key: tuple[str, str] | None = None
    rows: dict[int, Candle] = {}
    for c in candles:
        tf = c.timeframe
        if tf in grids:
            grid = grids[tf]
        else:
            grid = grids[tf] = _grid(tf)
        ok = False
        if grid is not None and type(c.ts) is int:
            o, h, lo, cl, v = c.open, c.high, c.low, c.close, c.volume
            ok = (
                type(o) is float and type(h) is float and type(lo) is float
                and type(cl) is float and type(v) is float
                and -_INF < lo <= h < _INF and -_INF < o < _INF and -_INF < cl < _INF
                and 0.0 <= v < _INF and c.ts >= 0 and (c.ts - grid[1]) % grid[0] == 0
            )
        if not ok:
            reason = _reason(c)
            if reason is not None:
                rejected.append(Rejected(c, reason))
                continue
        key = (c.symbol, tf)
        if key != last_key:
            rows = groups.setdefault(key, {})
            last_key = key
        previous = rows.get(c.ts)
        if previous is None or c.final or not previous.final:
            rows[c.ts] = c
    batches = [
        SeriesBatch(symbol, timeframe, _ascending(series_rows))
        for (symbol, timeframe), series_rows in groups.items()
        if series_rows
    ]
    return batches, rejected


def _ascending(rows: dict[int, Candle]) -> list[Candle]:
    values = list(rows.values())
    if all(values[i].ts < values[i + 1].ts for i in range(len(values) - 1)):
        return values
    return [rows[ts] for ts in sorted(rows)]
