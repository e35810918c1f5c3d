"""Turning a caller's candles into what the writers need: valid rows, one per key, per series,
ascending, already shaped as `candles` table rows. Pure code, no I/O.

This runs on every row of every backfill page, so the common case (float values, int time, a
fixed-length timeframe) is checked and shaped in one pass; anything unusual falls back to
`Candle.problem()`, which stays the one rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from market_data.models import Candle
from market_data.storage.base import Rejected
from market_data.timeframes import align, duration_ms, is_fixed

_INF = float("inf")

# A `candles` row: (exchange, symbol, timeframe, ts, open, high, low, close, volume, final).
Row = tuple[str, str, str, int, float, float, float, float, float, bool]
TS: Final = 3
FINAL: Final = 9


@dataclass(slots=True)
class SeriesBatch:
    """The deduplicated rows of one series, ascending by ts (never empty)."""

    symbol: str
    timeframe: str
    rows: list[Row]

    @property
    def first_ts(self) -> int:
        return self.rows[0][TS]

    @property
    def last_ts(self) -> int:
        return self.rows[-1][TS]

    @property
    def last_final_ts(self) -> int | None:
        for row in reversed(self.rows):
            if row[FINAL]:
                return row[TS]
        return None

    def chunks(self, size: int) -> list[SeriesBatch]:
        return [
            SeriesBatch(self.symbol, self.timeframe, self.rows[i : i + size])
            for i in range(0, len(self.rows), size)
        ]


def _reason(candle: Candle) -> str | None:
    try:
        return candle.problem()
    except (ValueError, TypeError) as exc:  # an unknown timeframe, a malformed field
        return str(exc) or type(exc).__name__


def _grid(timeframe: str) -> tuple[int, int]:
    """(step, anchor) for the inline alignment check; step 0 defers to Candle.problem()."""
    try:
        if is_fixed(timeframe):
            return duration_ms(timeframe), align(0, timeframe)
    except ValueError:
        pass
    return 0, 0


def prepare(candles: Iterable[Candle], exchange: str) -> tuple[list[SeriesBatch], list[Rejected]]:
    """Valid candles as rows grouped by series, one per key (the last wins, except that a
    non-final row never displaces a final one: the rule the database applies), ascending."""
    groups: dict[tuple[str, str], dict[int, Row]] = {}
    rejected: list[Rejected] = []
    series_rows: dict[int, Row] = {}
    symbol = timeframe = ""
    step = anchor = 0
    for c in candles:
        if c.symbol != symbol or c.timeframe != timeframe:
            symbol, timeframe = c.symbol, c.timeframe
            series_rows = groups.setdefault((symbol, timeframe), {})
            step, anchor = _grid(timeframe)
        ts, o, h, lo, cl, v, final = c.ts, c.open, c.high, c.low, c.close, c.volume, c.final
        if (
            step
            and type(o) is float
            and type(h) is float
            and type(lo) is float
            and type(cl) is float
            and type(v) is float
            and type(ts) is int
            and type(final) is bool
            and -_INF < lo <= h < _INF
            and -_INF < o < _INF
            and -_INF < cl < _INF
            and 0.0 <= v < _INF
            and ts >= 0
            and (ts - anchor) % step == 0
        ):
            row: Row = (exchange, symbol, timeframe, ts, o, h, lo, cl, v, final)
        else:
            reason = _reason(c)
            if reason is not None:
                rejected.append(Rejected(c, reason))
                continue
            row = (
                exchange,
                symbol,
                timeframe,
                ts,
                float(o),
                float(h),
                float(lo),
                float(cl),
                float(v),
                bool(final),
            )
        previous = series_rows.get(ts)
        if previous is None or final or not previous[FINAL]:
            series_rows[ts] = row
    batches = [SeriesBatch(sym, tf, _ascending(rows)) for (sym, tf), rows in groups.items() if rows]
    return batches, rejected


def _ascending(rows: dict[int, Row]) -> list[Row]:
    keys = list(rows)
    ordered = sorted(keys)  # linear (and in C) when the input already ascends, as pages do
    if keys == ordered:
        return list(rows.values())
    return [rows[ts] for ts in ordered]
