"""UncheckedFinals: one bounded span per series, most overdue first, settle what was unproven."""

from __future__ import annotations

from market_data.models import SeriesKey
from market_data.services.live.final_check import UncheckedFinals
from market_data.timeframes import HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BTC = SeriesKey("BTCUSD", "1m")
ETH = SeriesKey("ETHUSD", "1m")
SOL_1H = SeriesKey("SOLUSD", "1h")


def test_a_span_per_series_whatever_the_number_of_candles() -> None:
    unchecked = UncheckedFinals()
    for i in range(10_000):
        unchecked.note(BTC, T0 + i * MINUTE_MS)
    unchecked.note(BTC, T0 - 5 * MINUTE_MS)  # an older correction widens the span
    assert len(unchecked) == 1
    assert unchecked.take(BTC) == (T0 - 5 * MINUTE_MS, T0 + 9_999 * MINUTE_MS)
    assert unchecked.take(BTC) is None


def test_most_overdue_goes_first_once_it_is_due() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(BTC, T0 + 2 * MINUTE_MS)
    unchecked.note(ETH, T0 + MINUTE_MS)
    unchecked.note(SOL_1H, T0)  # closes at T0 + 1h: the latest of the three
    assert unchecked.most_overdue(T0 + MINUTE_MS) is None  # nothing closed by then
    assert unchecked.most_overdue(T0 + 2 * MINUTE_MS) == ETH
    assert unchecked.most_overdue(T0 + HOUR_MS) == ETH
    assert unchecked.most_overdue(T0 + HOUR_MS, skip={ETH}.__contains__) == BTC
    assert unchecked.next_due_ms() == T0 + 2 * MINUTE_MS


def test_a_span_being_checked_still_counts_as_unchecked_until_settled() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(BTC, T0)
    unchecked.note(BTC, T0 + 3 * MINUTE_MS)
    assert unchecked.take(BTC) == (T0, T0 + 3 * MINUTE_MS)
    assert unchecked.oldest_close_ms() == T0 + MINUTE_MS  # the age gauge does not dip
    assert unchecked.most_overdue(T0 + HOUR_MS) is None  # but it is not picked twice
    unchecked.note(BTC, T0 + 4 * MINUTE_MS)  # finalized while the check runs
    unchecked.settle(BTC, (T0 + MINUTE_MS, T0 + MINUTE_MS))  # one refused row: unproven
    assert unchecked.take(BTC) == (T0 + MINUTE_MS, T0 + 4 * MINUTE_MS)
    unchecked.settle(BTC, None)
    assert len(unchecked) == 0
    assert unchecked.oldest_close_ms() is None
