"""Time math: properties over every timeframe (hypothesis) and the calendar cases by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_data.timeframes import (
    ALL_TIMEFRAMES,
    DAY_MS,
    DERIVED_TIMEFRAMES,
    HOUR_MS,
    NATIVE_TIMEFRAMES,
    WEEK_MS,
    TimeframeError,
    align,
    count_periods,
    duration_ms,
    expected_opens,
    format_log_ts,
    format_ts,
    from_datetime,
    from_exchange,
    is_aligned,
    is_closed,
    is_fixed,
    is_native,
    last_closed_open,
    next_open,
    nominal_ms,
    parse_timeframe,
    previous_open,
    source_of,
    to_datetime,
    to_exchange,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


# From 1970-03 (so a previous week or month is still after the epoch) to 2100.
times = st.integers(min_value=ms(1970, 3, 1), max_value=ms(2100, 1, 1))
timeframes = st.sampled_from(ALL_TIMEFRAMES)
# No per-example deadline: the suite runs on busy 2-core machines, and these are pure functions.


@settings(deadline=None)
@given(times, timeframes)
def test_align_is_idempotent_and_not_after_ts(ts: int, tf: str) -> None:
    start = align(ts, tf)
    assert start <= ts < next_open(start, tf)
    assert align(start, tf) == start
    assert is_aligned(start, tf)


@settings(deadline=None)
@given(times, timeframes)
def test_next_open_is_later_and_aligned(ts: int, tf: str) -> None:
    after = next_open(ts, tf)
    assert after > ts
    assert is_aligned(after, tf)
    assert align(after - 1, tf) == align(ts, tf)


@settings(deadline=None)
@given(times, timeframes)
def test_previous_and_next_round_trip(ts: int, tf: str) -> None:
    start = align(ts, tf)
    assert previous_open(next_open(ts, tf), tf) == start
    assert next_open(previous_open(ts, tf), tf) == start
    assert previous_open(ts, tf) < start


@settings(deadline=None)
@given(times, timeframes)
def test_fixed_periods_have_their_length(ts: int, tf: str) -> None:
    if is_fixed(tf):
        assert next_open(ts, tf) - align(ts, tf) == duration_ms(tf)
    else:
        assert 28 * DAY_MS <= next_open(ts, tf) - align(ts, tf) <= 31 * DAY_MS
    assert nominal_ms(tf) >= next_open(ts, tf) - align(ts, tf)


@settings(max_examples=200, deadline=None)
@given(times, st.integers(min_value=0, max_value=400), timeframes)
def test_expected_opens_count_equals_count_periods(start: int, periods: int, tf: str) -> None:
    end = start + periods * nominal_ms(tf) // 3
    opens = list(expected_opens(start, end, tf))
    assert len(opens) == count_periods(start, end, tf)
    assert all(start <= t < end and is_aligned(t, tf) for t in opens)
    assert opens == sorted(set(opens))
    for earlier, later in itertools.pairwise(opens):
        assert next_open(earlier, tf) == later


@settings(deadline=None)
@given(times, times, timeframes)
def test_count_periods_of_aligned_bounds(a: int, b: int, tf: str) -> None:
    start, end = sorted((align(a, tf), align(b, tf)))
    if is_fixed(tf):
        assert count_periods(start, end, tf) == (end - start) // duration_ms(tf)
    assert count_periods(end, start, tf) == 0 or start == end


@settings(deadline=None)
@given(times, timeframes)
def test_closed_means_the_period_has_ended(ts: int, tf: str) -> None:
    start = align(ts, tf)
    assert not is_closed(start, tf, ts)
    assert is_closed(start, tf, next_open(start, tf))
    assert is_closed(last_closed_open(ts, tf), tf, ts)
    assert next_open(last_closed_open(ts, tf), tf) == start


@settings(deadline=None)
@given(times)
def test_months_start_on_the_first_at_midnight(ts: int) -> None:
    start = to_datetime(align(ts, "1M"))
    assert (start.day, start.hour, start.minute, start.second) == (1, 0, 0, 0)
    following = to_datetime(next_open(ts, "1M"))
    assert following.day == 1
    assert (following.year * 12 + following.month) - (start.year * 12 + start.month) == 1


@settings(deadline=None)
@given(times)
def test_weeks_start_on_monday(ts: int) -> None:
    for tf in ("1w", "14d"):
        start = to_datetime(align(ts, tf))
        assert start.weekday() == 0
        assert (start.hour, start.minute) == (0, 0)
    # Two-week periods are counted from Monday 1970-01-05.
    assert (align(ts, "14d") - ms(1970, 1, 5)) % (2 * WEEK_MS) == 0


def test_month_edges() -> None:
    assert align(ms(2024, 2, 29, 23, 59), "1M") == ms(2024, 2, 1)
    assert next_open(ms(2024, 1, 31, 12), "1M") == ms(2024, 2, 1)
    assert next_open(ms(2025, 12, 15), "1M") == ms(2026, 1, 1)
    assert previous_open(ms(2026, 1, 1), "1M") == ms(2025, 12, 1)
    assert count_periods(ms(2025, 1, 1), ms(2026, 1, 1), "1M") == 12
    assert list(expected_opens(ms(2025, 11, 15), ms(2026, 2, 1), "1M")) == [
        ms(2025, 12, 1),
        ms(2026, 1, 1),
    ]


def test_week_edges() -> None:
    # 2026-02-05 was a Thursday.
    assert align(ms(2026, 2, 5, 20), "1w") == ms(2026, 2, 2)
    assert next_open(ms(2026, 2, 5), "1w") == ms(2026, 2, 9)
    assert align(ms(2026, 2, 5, 20), "1d") == ms(2026, 2, 5)
    assert align(ms(2026, 2, 5, 22, 30), "4h") == ms(2026, 2, 5, 20)


def test_the_seeds_gap_is_three_hours_on_1h() -> None:
    start, end = ms(2026, 2, 5, 20), ms(2026, 2, 5, 23)
    assert count_periods(start, end, "1h") == 3 == (end - start) // HOUR_MS
    assert format_log_ts(start) == "2026-02-05 20:00:00"
    assert format_ts(start) == "2026-02-05T20:00:00Z"
    assert from_datetime(datetime(2026, 2, 5, 20)) == start  # naive means UTC


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1m", "1m"),
        ("1M", "1M"),
        ("5m", "5m"),
        ("15m", "15m"),
        ("30m", "30m"),
        ("1h", "1h"),
        ("1H", "1h"),
        ("3h", "3h"),
        ("12h", "12h"),
        ("1d", "1d"),
        ("1D", "1d"),
        ("1w", "1w"),
        ("1W", "1w"),
        ("14d", "14d"),
        ("14D", "14d"),
        ("4h", "4h"),
        ("2h", "2h"),
        ("8h", "8h"),
        (" 4h ", "4h"),
    ],
)
def test_parse_case_rules(text: str, canonical: str) -> None:
    assert parse_timeframe(text) == canonical


@pytest.mark.parametrize(
    "text", ["", "m", "1", "7h", "2d", "5M", "1y", "1min", "h1", "-1h", "1.5h"]
)
def test_parse_rejects_unknown(text: str) -> None:
    with pytest.raises(TimeframeError):
        parse_timeframe(text)


@settings(deadline=None)
@given(timeframes)
def test_parse_round_trips_its_own_spelling(tf: str) -> None:
    assert parse_timeframe(tf) == tf


@pytest.mark.parametrize(("derived", "source"), [("4h", "1h"), ("8h", "1h"), ("2h", "1h")])
def test_derived_timeframes_come_from_the_largest_native_divisor(derived: str, source: str) -> None:
    assert not is_native(derived)
    assert source_of(derived) == source
    with pytest.raises(TimeframeError):
        to_exchange(derived)


def test_every_derived_source_is_native_and_divides_it() -> None:
    for tf in DERIVED_TIMEFRAMES:
        src = source_of(tf)
        assert is_native(src)
        assert duration_ms(tf) % duration_ms(src) == 0
    for tf in NATIVE_TIMEFRAMES:
        assert source_of(tf) == tf


def test_exchange_spelling_round_trip() -> None:
    assert to_exchange("1d") == "1D"
    assert to_exchange("1w") == "1W"
    assert to_exchange("14d") == "14D"
    assert to_exchange("1M") == "1M"
    assert to_exchange("1m") == "1m"
    for tf in NATIVE_TIMEFRAMES:
        assert from_exchange(to_exchange(tf)) == tf
    with pytest.raises(TimeframeError):
        from_exchange("4h")


def test_month_has_no_fixed_length() -> None:
    assert not is_fixed("1M")
    with pytest.raises(TimeframeError):
        duration_ms("1M")
