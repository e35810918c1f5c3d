"""The `*_corrupt_rate` faults: candle rows the exchange should never send, but a client must
survive. Each corruption breaks one invariant a stored candle must keep, in a way that a
"helpful" client could silently repair (swap high and low, take the absolute volume, round the
time), so a test can tell rejected from repaired.
"""

from __future__ import annotations

import json
from random import Random

from market_data.simulator.prices import Ohlcv
from market_data.timeframes import DAY_MS

KINDS = ("high_below_low", "negative_volume", "nan", "infinite", "misaligned", "future")


def corrupt_row(row: Ohlcv, kind: str) -> list[object]:
    """`row` (MTS, OPEN, CLOSE, HIGH, LOW, VOLUME) broken in the way `kind` names."""
    mts, open_, close, high, low, volume = row
    if kind == "high_below_low":
        # Not a plain swap: swapping back would still not give the true candle.
        return [mts, open_, close, low * 0.9, high * 1.1, volume]
    if kind == "negative_volume":
        return [mts, open_, close, high, low, -volume - 1.0]
    if kind == "nan":
        return [mts, float("nan"), close, high, low, volume]
    if kind == "infinite":
        return [mts, open_, close, float("inf"), low, volume]
    if kind == "misaligned":
        return [mts + 1234, open_, close, high, low, volume]
    if kind == "future":
        return [mts + 30 * DAY_MS, open_, close, high, low, volume]
    raise ValueError(f"unknown corruption {kind!r}")


def corrupt_rows(
    rows: list[Ohlcv], rate: float, rng: Random
) -> tuple[list[list[object] | Ohlcv], list[str]]:
    """Each row corrupted with probability `rate`; the rows and the kinds applied."""
    out: list[list[object] | Ohlcv] = []
    kinds: list[str] = []
    for row in rows:
        if rng.random() < rate:
            kind = rng.choice(KINDS)
            out.append(corrupt_row(row, kind))
            kinds.append(kind)
        else:
            out.append(row)
    return out, kinds


def dumps_rows(rows: object) -> str:
    """JSON as a careless server writes it: `NaN` and `Infinity` as bare words."""
    return json.dumps(rows, separators=(",", ":"), allow_nan=True)
