"""Pure aggregation of derived timeframes (4h/2h/8h from 1h)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market_data.models import Candle, SeriesKey
from market_data.services.derived import DerivationError, aggregate, derived_targets
from market_data.timeframes import HOUR_MS, align

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, aligned to 8h
LATER = T0 + 100 * 24 * HOUR_MS


def hour(
    i: int,
    *,
    o: float = 10,
    h: float = 12,
    lo: float = 9,
    c: float = 11,
    v: float = 1,
    final: bool = True,
    symbol: str = "BTCUSD",
) -> Candle:
    return Candle(symbol, "1h", T0 + i * HOUR_MS, o, h, lo, c, v, final)


def test_ohlcv_of_a_full_period() -> None:
    source = [
        hour(0, o=10, h=12, lo=9, c=11, v=1),
        hour(1, o=11, h=15, lo=10, c=14, v=2),
        hour(2, o=14, h=14, lo=7, c=8, v=3),
        hour(3, o=8, h=9, lo=8, c=9, v=0.5),
    ]
    [candle] = aggregate(source, "4h", now_ms=LATER)
    assert (candle.symbol, candle.timeframe, candle.ts) == ("BTCUSD", "4h", T0)
    assert (candle.open, candle.high, candle.low, candle.close) == (10, 15, 7, 9)
    assert candle.volume == pytest.approx(6.5)
    assert candle.final is True
    assert candle.problem() is None


def test_periods_align_to_utc_and_empty_periods_yield_nothing() -> None:
    # hours 1 and 2 -> 4h period 0; hour 13 -> period 12h; nothing in 4h..12h
    source = [hour(13), hour(2), hour(1)]
    result = aggregate(source, "4h", now_ms=LATER)
    assert [c.ts for c in result] == [T0, T0 + 12 * HOUR_MS]
    assert result[0].open == 10
    assert result[0].volume == 2
    assert [c.ts for c in aggregate(source, "8h", now_ms=LATER)] == [T0, T0 + 8 * HOUR_MS]
    assert [c.ts for c in aggregate(source, "2h", now_ms=LATER)] == [
        T0,
        T0 + 2 * HOUR_MS,
        T0 + 12 * HOUR_MS,
    ]


def test_open_is_first_and_close_is_last_by_time_not_input_order() -> None:
    source = [hour(3, o=30, c=31), hour(1, o=10, c=11), hour(2, o=20, c=21)]
    [candle] = aggregate(source, "4h", now_ms=LATER)
    assert (candle.open, candle.close) == (10, 31)


def test_duplicate_source_rows_last_wins() -> None:
    source = [hour(0, v=1, c=11), hour(0, v=5, c=12)]
    [candle] = aggregate(source, "4h", now_ms=LATER)
    assert (candle.volume, candle.close) == (5, 12)


def test_finality_needs_period_ended_and_all_sources_final() -> None:
    period_end = T0 + 4 * HOUR_MS
    source = [hour(0), hour(1)]
    assert aggregate(source, "4h", now_ms=period_end - 1)[0].final is False
    assert aggregate(source, "4h", now_ms=period_end)[0].final is True
    with_open = [hour(0), hour(3, final=False)]
    assert aggregate(with_open, "4h", now_ms=LATER)[0].final is False


def test_symbols_are_kept_apart() -> None:
    source = [hour(0, symbol="ETHUSD", v=2), hour(0, symbol="BTCUSD", v=1)]
    result = aggregate(source, "4h", now_ms=LATER)
    assert [(c.symbol, c.volume) for c in result] == [("BTCUSD", 1), ("ETHUSD", 2)]


def test_refuses_a_source_that_does_not_divide() -> None:
    with pytest.raises(DerivationError):
        aggregate([Candle("BTCUSD", "3h", T0, 1, 1, 1, 1, 1)], "4h", now_ms=LATER)
    with pytest.raises(DerivationError):
        aggregate([hour(0)], "1h", now_ms=LATER)


def test_no_source_no_candles() -> None:
    assert aggregate([], "4h", now_ms=LATER) == []


def test_derived_targets() -> None:
    derived = [SeriesKey("BTCUSD", "4h"), SeriesKey("BTCUSD", "2h"), SeriesKey("ETHUSD", "4h")]
    assert derived_targets(derived, SeriesKey("BTCUSD", "1h")) == ["2h", "4h"]
    assert derived_targets(derived, SeriesKey("BTCUSD", "1m")) == []


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),
            st.floats(min_value=1, max_value=1e6),
            st.floats(min_value=0, max_value=1e3),
            st.floats(min_value=0, max_value=1e3),
        ),
        max_size=60,
    )
)
def test_aggregate_properties(rows: list[tuple[int, float, float, float]]) -> None:
    source = [
        Candle("BTCUSD", "1h", T0 + i * HOUR_MS, p, p + spread, p, p + spread / 2, v)
        for i, p, spread, v in rows
    ]
    latest = {c.ts: c for c in source}
    result = aggregate(source, "4h", now_ms=LATER)
    assert len(result) == len({align(ts, "4h") for ts in latest})
    assert sum(c.volume for c in result) == pytest.approx(sum(c.volume for c in latest.values()))
    for candle in result:
        members = [c for c in latest.values() if align(c.ts, "4h") == candle.ts]
        assert candle.high == max(c.high for c in members)
        assert candle.low == min(c.low for c in members)
        assert candle.problem() is None
