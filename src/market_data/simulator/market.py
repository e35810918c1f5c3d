"""The simulated market: deterministic from a seed, random access, with the truth of any candle.

Every candle is computed from (seed, pair, time) when asked (see `prices.py`), so a year of
history costs nothing until it is read. Whole hours are the unit of work and of caching: the
minutes of an hour come out of one generator call, and closed hours keep their 1m..1h candles.
Longer periods are aggregated from hours. What a caller sees depends on `now`: minutes after
it do not exist yet, and the current minute holds only the trades whose times have passed.
Which pairs exist and when they trade is the pair registry's (`listings.py`): a delisted pair's
market is read as of just before its delisting, so its candles stop there.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from market_data.models import Candle
from market_data.simulator.listings import NEVER_MS, PairBook
from market_data.simulator.pairs import DEFAULT_PAIRS, PairSpec
from market_data.simulator.prices import (
    Ohlcv,
    Trade,
    anchor_log_price,
    generate_hour,
    generate_trades,
    group,
    merge,
    partial_candle,
)
from market_data.timeframes import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    align,
    duration_ms,
    next_open,
    parse_timeframe,
    previous_open,
)

# Timeframes that divide an hour are cut from one hour's minutes; longer ones merge hours.
_IN_HOUR = ("1m", "5m", "15m", "30m", "1h")


@dataclass(slots=True)
class _Hour:
    minutes: list[Ohlcv]
    counts: list[int]
    by_tf: dict[str, list[Ohlcv]] = field(default_factory=dict)

    def rows(self, tf: str) -> list[Ohlcv]:
        rows = self.by_tf.get(tf)
        if rows is None:
            rows = group(self.minutes, duration_ms(tf))
            self.by_tf[tf] = rows
        return rows


class _Lru(OrderedDict[object, object]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: object, value: object) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


class Market:
    """Candles of every configured pair at every timeframe, as of `clock()`."""

    def __init__(
        self,
        seed: int = 1,
        pairs: Iterable[PairSpec] = DEFAULT_PAIRS,
        *,
        clock: Callable[[], float] = time.time,
        history_days: float = 400.0,
        history_start_ms: int | None = None,
        cache_hours: int = 4096,
        churn_minutes: float = 0.0,
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.started_ms = int(clock() * 1000)
        if history_start_ms is None:
            history_start_ms = align(self.started_ms - int(history_days * DAY_MS), "1d")
        self.history_start_ms = history_start_ms
        self.book = PairBook(
            seed,
            pairs,
            started_ms=self.started_ms,
            history_start_ms=history_start_ms,
            churn_minutes=churn_minutes,
        )
        if not self.book.specs:
            raise ValueError("the market needs at least one pair")
        # The registry's own lists: pairs it lists later appear here too.
        self.pairs: list[PairSpec] = self.book.specs
        self._listing = self.book.listed_ms
        self._delisting = self.book.delisted_ms
        self._hours = _Lru(cache_hours)
        self._hour_aggs = _Lru(cache_hours * 64)
        self._periods = _Lru(cache_hours * 4)
        self._anchors = _Lru(cache_hours * 2)
        self._trades = _Lru(256)

    # ---- names and listing ------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def exchange_pairs(self) -> list[str]:
        """Pair ids as `conf/pub:list:pair:exchange` lists them now (`DOGE:USD`)."""
        now = self.now_ms()
        self.book.catch_up(now)
        return self.book.listed_pairs(now)

    def index_of_pair(self, pair: str) -> int | None:
        """Index of a pair listed now, spelled exactly (`DOGE:USD`, not `DOGEUSD`)."""
        now = self.now_ms()
        self.book.catch_up(now)
        index = self.book.index_of_pair(pair)
        return index if index is not None and self.book.listed_at(index, now) else None

    def index_of_pair_with_history(self, pair: str) -> int | None:
        """Index of a pair spelled exactly, delisted or not yet listed ones included (REST)."""
        self.book.catch_up(self.now_ms())
        return self.book.index_of_pair(pair)

    def index_of(self, symbol: str) -> int:
        self.book.catch_up(self.now_ms())
        index = self.book.index_of(symbol)
        if index is None:
            raise KeyError(f"the simulated market has no pair {symbol!r}")
        return index

    def listing_ms(self, symbol: str) -> int:
        """When the pair's history starts (its first possible candle)."""
        return self._listing[self.index_of(symbol)]

    def delisting_ms(self, symbol: str) -> int | None:
        """When the pair was (or is to be) delisted: its candles stop before it."""
        when = self._delisting[self.index_of(symbol)]
        return None if when == NEVER_MS else when

    def is_listed(self, symbol: str, at_ms: int | None = None) -> bool:
        """Whether the exchange's pair list holds the pair now (or at `at_ms`)."""
        return self.book.listed_at(self.index_of(symbol), self.now_ms() if at_ms is None else at_ms)

    def activity_share(self, symbol: str) -> float:
        """The expected share of minutes with at least one trade (so with a 1m candle)."""
        return self.pairs[self.index_of(symbol)].trade_probability

    def list_pair(self, pair: str | PairSpec, at_ms: int | None = None) -> PairSpec:
        """List a pair now (or at `at_ms`, not in the past): a new one, or one due at another time.

        A name the market does not know becomes a new pair with a generic spec; pass a
        `PairSpec` to choose its price and activity. It trades from the next whole minute.
        """
        now = self.now_ms()
        self.book.catch_up(now)
        at = now if at_ms is None else at_ms
        if at < now:
            raise ValueError("a listing cannot be in the past: served candles would change")
        index, former = self.book.list_pair(pair, at, now)
        if former is not None:
            # Hours computed for the former listing were cut at it.
            for hour in (align(former, "1h"), align(at, "1h")):
                self._hours.pop((index, hour), None)
        return self.pairs[index]

    def delist_pair(self, pair: str, at_ms: int | None = None) -> None:
        """Delist a pair now (or at `at_ms`, not in the past): its last trade is before that."""
        now = self.now_ms()
        at = now if at_ms is None else at_ms
        if at < now:
            raise ValueError("a delisting cannot be in the past: served candles would change")
        self.book.delist_pair(self.index_of(pair), at)

    def _as_of(self, index: int, now: int) -> int:
        """The moment the pair's market is read at: `now`, or just before its delisting."""
        return min(now, self._delisting[index] - 1)

    # ---- public views -----------------------------------------------------------------------

    def truth(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed candles with open time in [start_ms, end_ms), ascending, final=True."""
        index = self.index_of(symbol)
        tf = parse_timeframe(timeframe)
        spec = self.pairs[index]
        now = self.now_ms()
        rows = self.select(index, tf, start_ms, end_ms - 1, now, limit=None, ascending=True)
        return [
            Candle(spec.symbol, tf, r[0], r[1], r[3], r[4], r[2], r[5], True)
            for r in rows
            if next_open(r[0], tf) <= now
        ]

    def candle_at(
        self, symbol: str, timeframe: str, ts_ms: int, now_ms: int | None = None
    ) -> Candle | None:
        """The candle of the period containing `ts_ms` as of `now_ms` (final once closed)."""
        index = self.index_of(symbol)
        tf = parse_timeframe(timeframe)
        now = self.now_ms() if now_ms is None else now_ms
        row = self.period(index, tf, align(ts_ms, tf), now)
        if row is None:
            return None
        final = next_open(row[0], tf) <= now
        return Candle(
            self.pairs[index].symbol, tf, row[0], row[1], row[3], row[4], row[2], row[5], final
        )

    # ---- candles as tuples (the server's fast path) -----------------------------------------

    def select(
        self,
        index: int,
        tf: str,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        *,
        limit: int | None,
        ascending: bool,
    ) -> list[Ohlcv]:
        """Candles with open time in [start_ms, end_ms] (inclusive), as Bitfinex's `hist`.

        Ascending takes the earliest `limit`, descending the latest; the still-open candle is
        included when it has traded.
        """
        now_ms = self._as_of(index, now_ms)
        lo = max(start_ms, align(self._listing[index], tf))
        hi = min(end_ms, now_ms)
        out: list[Ohlcv] = []
        if lo > hi or (limit is not None and limit <= 0):
            return out
        for row in self._iter(index, tf, lo, hi, now_ms, ascending):
            out.append(row)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _iter(
        self, index: int, tf: str, lo: int, hi: int, now: int, ascending: bool
    ) -> Iterator[Ohlcv]:
        if tf in _IN_HOUR:
            hours = range(align(lo, "1h"), hi + 1, HOUR_MS)
            for hour in hours if ascending else reversed(hours):
                rows = self._hour_rows(index, tf, hour, now)
                for row in rows if ascending else reversed(rows):
                    if lo <= row[0] <= hi:
                        yield row
            return
        opening = align(lo if ascending else hi, tf)
        if opening < lo:
            opening = next_open(opening, tf)
        step = next_open if ascending else previous_open
        while lo <= opening <= hi:
            candle = self.period(index, tf, opening, now)
            if candle is not None:
                yield candle
            opening = step(opening, tf)

    def period(self, index: int, tf: str, opening: int, now: int) -> Ohlcv | None:
        """The candle of the period opening at `opening`, as of `now`."""
        now = self._as_of(index, now)
        if tf in _IN_HOUR:
            for row in self._hour_rows(index, tf, align(opening, "1h"), now):
                if row[0] == opening:
                    return row
            return None
        end = next_open(opening, tf)
        closed = end <= now
        key = (index, tf, opening)
        if closed and key in self._periods:
            return self._periods[key]  # type: ignore[return-value]
        first = max(opening, align(self._listing[index], "1h"))
        hours = [
            agg
            for hour in range(first, min(end, now + 1), HOUR_MS)
            if (agg := self._hour_agg(index, hour, now)) is not None
        ]
        merged = merge(opening, hours)
        if closed:
            self._periods.put(key, merged)
        return merged

    def current(self, index: int, tf: str, now: int) -> Ohlcv | None:
        """The candle of the period containing `now`, if it has traded yet."""
        # WebSocket updates come from here: a scheduled delisting now due must stop them.
        self.book.catch_up(self.now_ms())
        return self.period(index, tf, align(now, tf), now)

    # ---- hours ------------------------------------------------------------------------------

    def _hour(self, index: int, hour: int) -> _Hour:
        key = (index, hour)
        cached = self._hours.get(key)
        if cached is not None:
            self._hours.move_to_end(key)
            return cached  # type: ignore[return-value]
        spec = self.pairs[index]
        minutes, counts = generate_hour(
            self.seed, spec, hour, self._anchor(index, hour), self._anchor(index, hour + HOUR_MS)
        )
        listed = self._listing[index]
        if hour < listed:
            # The listing hour: a minute begun before the listing would hold earlier trades.
            first = bisect_left(minutes, listed, key=lambda row: row[0])
            minutes, counts = minutes[first:], counts[first:]
        block = _Hour(minutes, counts)
        self._hours.put(key, block)
        return block

    def _anchor(self, index: int, hour: int) -> float:
        key = (index, hour)
        value = self._anchors.get(key)
        if value is None:
            value = anchor_log_price(self.seed, self.pairs[index], hour // HOUR_MS)
            self._anchors.put(key, value)
        return value  # type: ignore[return-value]

    def _hour_rows(self, index: int, tf: str, hour: int, now: int) -> list[Ohlcv]:
        if hour + HOUR_MS <= self._listing[index] or hour > now:
            return []
        block = self._hour(index, hour)
        if hour + HOUR_MS <= now:
            return block.rows(tf)
        return group(self._visible_minutes(index, block, now), duration_ms(tf))

    def _hour_agg(self, index: int, hour: int, now: int) -> Ohlcv | None:
        if hour + HOUR_MS > now:
            rows = self._hour_rows(index, "1h", hour, now)
            return rows[0] if rows else None
        key = (index, hour)
        if key in self._hour_aggs:
            return self._hour_aggs[key]  # type: ignore[return-value]
        rows = self._hour_rows(index, "1h", hour, now)
        agg = rows[0] if rows else None
        self._hour_aggs.put(key, agg)
        return agg

    def _visible_minutes(self, index: int, block: _Hour, now: int) -> list[Ohlcv]:
        out: list[Ohlcv] = []
        for minute, count in zip(block.minutes, block.counts, strict=True):
            if minute[0] + MINUTE_MS <= now:
                out.append(minute)
            elif minute[0] <= now:
                partial = partial_candle(minute, self.trades(index, minute, count), now - minute[0])
                if partial is not None:
                    out.append(partial)
        return out

    # ---- trades (what drives WebSocket updates) ---------------------------------------------

    def trades(self, index: int, minute: Ohlcv, count: int) -> list[Trade]:
        key = (index, minute[0])
        cached = self._trades.get(key)
        if cached is None:
            cached = generate_trades(self.seed, self.pairs[index], minute, count)
            self._trades.put(key, cached)
        return cached  # type: ignore[return-value]

    def next_trade_ms(self, index: int, after_ms: int, horizon_ms: int = HOUR_MS) -> int | None:
        """Time of the pair's first trade strictly after `after_ms`, within the horizon."""
        self.book.catch_up(self.now_ms())
        minute_ts = max(align(after_ms, "1m"), self._listing[index])
        stop = min(after_ms + horizon_ms, self._delisting[index] - 1)
        while minute_ts <= stop:
            hour = align(minute_ts, "1h")
            block = self._hour(index, hour)
            for minute, count in zip(block.minutes, block.counts, strict=True):
                if minute[0] < minute_ts:
                    continue
                for offset, _, _ in self.trades(index, minute, count):
                    if minute[0] + offset > after_ms:
                        when = minute[0] + offset
                        return when if when < self._delisting[index] else None
            minute_ts = hour + HOUR_MS
        return None
