"""The price process behind the simulated market: pure functions of (seed, pair, time).

Random access is the point: the candles of any hour are computed from a hash of
(seed, pair, hour) without walking the history before it. The log price at each hour boundary
is a sum of value-noise octaves (periods of 1 hour to about a year, amplitudes growing like a
random walk's); inside an hour a Brownian bridge joins the two boundary prices minute by minute.
A traded minute's candle is drawn around that path; the trades that make it up are drawn from
the candle, so the candle is exactly the aggregate of its trades.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from itertools import accumulate
from random import Random

from market_data.simulator.pairs import PairSpec
from market_data.timeframes import MINUTE_MS

# (ts, open, close, high, low, volume): the wire order of a Bitfinex candle.
Ohlcv = tuple[int, float, float, float, float, float]
# (offset ms within the minute, price, volume)
Trade = tuple[int, float, float]

_OCTAVES = 14
_TWO64 = float(1 << 64)
# Every trade lands before the minute ends, so a minute's candle is final before its period ends.
LAST_TRADE_OFFSET_MS = 59_000


# Below this share of traded minutes, pricing only the traded minutes is cheaper than all 61.
_PRICE_EVERY_MINUTE_FROM = 0.3


class _LazyPrices:
    """`prices[i]` of a thin pair's hour, computed when a traded minute asks for it."""

    __slots__ = ("_miss", "_path")

    def __init__(self, path: list[float], miss: float) -> None:
        self._path = path
        self._miss = miss

    def __getitem__(self, i: int) -> float:
        return math.exp(self._path[i] - self._miss * i)


def hash64(*parts: object) -> int:
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def sig5(x: float) -> float:
    """Round to 5 significant digits, as Bitfinex prices are."""
    if x == 0.0:
        return 0.0
    digits = 4 - math.floor(math.log10(abs(x)))
    return round(x, digits)


def _rounder(digits: int) -> Callable[[float], float]:
    """`round(x, digits)` for a fixed precision, four times faster (the result is the same)."""
    if digits >= 0:
        scale = 10.0**digits
        return lambda x: round(x * scale) / scale
    step = 10.0 ** (-digits)
    return lambda x: round(x / step) * step


@functools.lru_cache(maxsize=1 << 16)
def _knot(seed: int, pair: str, level: int, i: int) -> float:
    """Value-noise knot in [-1, 1); neighbouring hours share most knots, hence the cache."""
    return hash64(seed, pair, "oct", level, i) / _TWO64 * 2.0 - 1.0


def anchor_log_price(seed: int, spec: PairSpec, hour_index: int) -> float:
    """Log price at the start of hour `hour_index` (hours since the epoch)."""
    sigma_hour = spec.volatility * math.sqrt(60.0)
    total = math.log(spec.price)
    for level in range(_OCTAVES):
        period = 1 << level
        i, frac_steps = divmod(hour_index, period)
        a = _knot(seed, spec.pair, level, i)
        if frac_steps:
            b = _knot(seed, spec.pair, level, i + 1)
            value = a + (b - a) * (frac_steps / period)
        else:
            value = a
        total += value * sigma_hour * math.sqrt(period) * 0.35
    return total


def generate_hour(
    seed: int, spec: PairSpec, hour_ms: int, a0: float, a1: float
) -> tuple[list[Ohlcv], list[int]]:
    """The traded minutes of one hour (ascending) and their trade counts.

    This is the simulator's hot path (a year of 1m history is 525,600 minutes), hence uniform
    draws instead of Gaussian ones and one rounding precision for the whole hour. A thin pair
    (most of an exchange's pairs) prices only the minutes it trades in: the same numbers, as
    each price is the same expression of the same path, for a fraction of the work.
    """
    rng = Random(hash64(seed, spec.pair, "hour", hour_ms))
    rand = rng.random
    step = spec.volatility * 3.4641016151377544  # uniform(-0.5, 0.5) * sqrt(12) has std 1
    # Summed left to right from a0, as a running total would be: the same floats.
    path = list(accumulate([(rand() - 0.5) * step for _ in range(60)], initial=a0))
    miss = (path[60] - a1) / 60.0
    exp = math.exp
    prob = spec.trade_probability
    prices: list[float] | _LazyPrices
    if prob >= _PRICE_EVERY_MINUTE_FROM:
        prices = [exp(path[i] - miss * i) for i in range(61)]
    else:
        prices = _LazyPrices(path, miss)

    rnd = _rounder(4 - math.floor(math.log10(prices[0])))
    noise = spec.volatility * 0.5
    mean_extra = spec.trades_per_minute - 1.0
    volume_unit = spec.volume / spec.trades_per_minute
    minutes: list[Ohlcv] = []
    counts: list[int] = []
    for i in range(60):
        if rand() >= prob:
            continue
        k = 1 + int(mean_extra * (0.5 + rand()))
        o = rnd(prices[i] * (1.0 + (rand() - 0.5) * noise))
        if k == 1:
            c = high = low = o
        else:
            c = rnd(prices[i + 1] * (1.0 + (rand() - 0.5) * noise))
            high, low = (o, c) if o >= c else (c, o)
            if k >= 3:
                side = rand()
                if k >= 4 or side < 0.5:
                    high = rnd(high * (1.0 + rand() * noise))
                if k >= 4 or side >= 0.5:
                    low = rnd(low * (1.0 - rand() * noise))
        volume = round(volume_unit * k * exp((rand() - 0.5) * 2.0) * 1e8 + 1.0) / 1e8
        minutes.append((hour_ms + i * MINUTE_MS, o, c, high, low, volume))
        counts.append(k)
    return minutes, counts


def generate_trades(seed: int, spec: PairSpec, minute: Ohlcv, count: int) -> list[Trade]:
    """The trades whose aggregate is `minute`, ascending by offset."""
    ts, o, c, high, low, volume = minute
    rng = Random(hash64(seed, spec.pair, "trades", ts))
    offsets = sorted(rng.randrange(0, LAST_TRADE_OFFSET_MS) for _ in range(count))
    if count == 1:
        prices = [o]
    else:
        mids = [sig5(rng.uniform(low, high)) for _ in range(count - 2)]
        slots = list(range(len(mids)))
        rng.shuffle(slots)
        if high > max(o, c):
            mids[slots.pop()] = high
        if low < min(o, c):
            mids[slots.pop()] = low
        prices = [o, *mids, c]
    weights = [rng.random() + 0.05 for _ in range(count)]
    scale = volume / sum(weights)
    return [(off, p, w * scale) for off, p, w in zip(offsets, prices, weights, strict=True)]


def partial_candle(minute: Ohlcv, trades: list[Trade], elapsed_ms: int) -> Ohlcv | None:
    """The minute's candle once the trades up to `elapsed_ms` into it have happened."""
    seen = 0
    for offset, _, _ in trades:
        if offset > elapsed_ms:
            break
        seen += 1
    if seen == 0:
        return None
    if seen == len(trades):
        return minute
    prices = [p for _, p, _ in trades[:seen]]
    volume = round(sum(v for _, _, v in trades[:seen]), 8)
    return (minute[0], prices[0], prices[-1], max(prices), min(prices), volume)


def merge(ts: int, rows: list[Ohlcv]) -> Ohlcv | None:
    """Aggregate ascending candles into one period opening at `ts`, as an exchange does trades."""
    if not rows:
        return None
    if len(rows) == 1:
        row = rows[0]
        return row if row[0] == ts else (ts, row[1], row[2], row[3], row[4], row[5])
    return (
        ts,
        rows[0][1],
        rows[-1][2],
        max(r[3] for r in rows),
        min(r[4] for r in rows),
        round(sum(r[5] for r in rows), 8),
    )


def group(rows: list[Ohlcv], period_ms: int) -> list[Ohlcv]:
    """Aggregate ascending candles of one hour into periods of `period_ms` (which divides 1h)."""
    if period_ms == MINUTE_MS:
        return rows
    out: list[Ohlcv] = []
    bucket: list[Ohlcv] = []
    current = -1
    for row in rows:
        start = row[0] - row[0] % period_ms
        if start != current and bucket:
            merged = merge(current, bucket)
            assert merged is not None
            out.append(merged)
            bucket = []
        current = start
        bucket.append(row)
    if bucket:
        merged = merge(current, bucket)
        assert merged is not None
        out.append(merged)
    return out
