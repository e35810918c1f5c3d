"""The simulated market: determinism, aggregation, thin and new pairs, evolving candles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from market_data.models import Candle
from market_data.simulator import NEW_PAIR, THIN_PAIR, Market
from market_data.simulator.pairs import PairSpec
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align, next_open

NOW_S = 1_780_000_000.0  # a fixed market time: 2026-05-28 20:26:40 UTC
NOW_MS = int(NOW_S * 1000)


def fixed_market(seed: int = 5, **kwargs: object) -> Market:
    return Market(seed, clock=lambda: NOW_S, **kwargs)  # type: ignore[arg-type]


def aggregate(minutes: list[Candle], tf: str) -> list[tuple[int, float, float, float, float]]:
    buckets: dict[int, list[Candle]] = {}
    for c in minutes:
        buckets.setdefault(align(c.ts, tf), []).append(c)
    return [
        (ts, rows[0].open, rows[-1].close, max(r.high for r in rows), min(r.low for r in rows))
        for ts, rows in sorted(buckets.items())
    ]


def test_same_seed_same_truth_and_other_seed_differs() -> None:
    start, end = NOW_MS - 6 * HOUR_MS, NOW_MS
    a = fixed_market(5).truth("BTCUSD", "1m", start, end)
    b = fixed_market(5).truth("BTCUSD", "1m", start, end)
    c = fixed_market(6).truth("BTCUSD", "1m", start, end)
    assert a == b
    assert len(a) > 200
    assert [x.close for x in a] != [x.close for x in c]


def test_truth_is_closed_candles_only_in_half_open_window() -> None:
    market = fixed_market()
    candles = market.truth("ETHUSD", "1m", NOW_MS - HOUR_MS, NOW_MS + HOUR_MS)
    assert candles
    assert all(c.final and c.ts + MINUTE_MS <= NOW_MS for c in candles)
    assert all(NOW_MS - HOUR_MS <= c.ts < NOW_MS for c in candles)
    assert all(c.symbol == "ETHUSD" and c.timeframe == "1m" for c in candles)
    assert all(c.problem() is None for c in candles)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)


@pytest.mark.parametrize("tf", ["5m", "15m", "1h", "3h", "4h", "8h", "1d", "1w", "1M"])
def test_longer_timeframes_aggregate_the_minutes(tf: str) -> None:
    market = fixed_market()
    end = align(NOW_MS, tf)
    start = align(end - 40 * DAY_MS, tf) if tf in ("1w", "1M") else end - 2 * DAY_MS
    minutes = market.truth("SOLUSD", "1m", start, end)
    expected = aggregate(minutes, tf)
    got = market.truth("SOLUSD", tf, start, end)
    assert [(c.ts, c.open, c.close, c.high, c.low) for c in got] == expected
    volumes = {align(c.ts, tf): 0.0 for c in minutes}
    for c in minutes:
        volumes[align(c.ts, tf)] += c.volume
    assert [c.volume for c in got] == pytest.approx([volumes[c.ts] for c in got], rel=1e-9)


def test_week_and_month_alignment() -> None:
    market = fixed_market()
    weeks = market.truth("BTCUSD", "1w", NOW_MS - 60 * DAY_MS, NOW_MS)
    months = market.truth("BTCUSD", "1M", NOW_MS - 100 * DAY_MS, NOW_MS)
    assert weeks
    assert months
    assert all(datetime.fromtimestamp(c.ts / 1000, UTC).weekday() == 0 for c in weeks)
    assert all(datetime.fromtimestamp(c.ts / 1000, UTC).day == 1 for c in months)


def test_thin_pair_has_mostly_empty_minutes() -> None:
    market = fixed_market()
    day = market.truth(THIN_PAIR, "1m", NOW_MS - DAY_MS, NOW_MS)
    share = len(day) / 1440
    assert 0.08 < share < 0.25
    liquid = market.truth("BTCUSD", "1m", NOW_MS - DAY_MS, NOW_MS)
    assert len(liquid) / 1440 > 0.75


def test_new_pair_history_starts_at_listing() -> None:
    market = fixed_market()
    listing = market.listing_ms(NEW_PAIR)
    assert listing == align(NOW_MS - 21 * DAY_MS, "1h")
    assert market.listing_ms("BTCUSD") < listing - 300 * DAY_MS
    assert market.truth(NEW_PAIR, "1m", listing - 30 * DAY_MS, listing) == []
    after = market.truth(NEW_PAIR, "1m", listing - DAY_MS, listing + DAY_MS)
    assert after
    assert after[0].ts >= listing


def test_listing_offset_is_configurable() -> None:
    pair = PairSpec("NEWUSD", 10.0, listed_days_ago=3.0)
    market = Market(1, [pair], clock=lambda: NOW_S)
    assert market.listing_ms("NEWUSD") == align(NOW_MS - 3 * DAY_MS, "1h")


def test_current_minute_evolves_and_is_final_before_it_ends() -> None:
    busy = PairSpec("BTCUSD", 60_000.0, trade_probability=1.0, trades_per_minute=50.0)
    minute = align(NOW_MS, "1m") - 10 * MINUTE_MS
    market = Market(3, [busy], clock=lambda: NOW_S)
    final = market.candle_at("BTCUSD", "1m", minute)
    assert final is not None
    assert final.final
    seen = []
    for offset in range(0, 60_000, 2_000):
        candle = market.candle_at("BTCUSD", "1m", minute, now_ms=minute + offset)
        if candle is not None:
            assert not candle.final
            seen.append(candle)
    assert len({c.volume for c in seen}) > 5
    assert [c.volume for c in seen] == sorted(c.volume for c in seen)
    assert all(c.open == final.open for c in seen)
    last = market.candle_at("BTCUSD", "1m", minute, now_ms=minute + 59_000)
    assert last is not None
    assert last.same_values(final)


def test_open_period_of_longer_timeframe_includes_partial_minute() -> None:
    market = fixed_market()
    hour = align(NOW_MS, "1h")
    open_candle = market.candle_at("BTCUSD", "1h", hour)
    assert open_candle is not None
    assert not open_candle.final
    minutes = market.truth("BTCUSD", "1m", hour, NOW_MS)
    assert open_candle.high >= max(c.high for c in minutes)
    assert open_candle.volume >= sum(c.volume for c in minutes) - 1e-6
    assert next_open(hour, "1h") > NOW_MS


def test_unknown_symbol_is_refused() -> None:
    with pytest.raises(KeyError):
        fixed_market().truth("NOPEUSD", "1m", 0, NOW_MS)
