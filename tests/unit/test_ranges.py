"""Range arithmetic (ranges.py) against the plain definition: sets of covered points."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from market_data.ranges import Range, empty_slots, missing_runs, proven_empty, subtract
from market_data.timeframes import HOUR_MS, ceil_open

ranges = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 60)).map(lambda r: (min(r), max(r))),
    max_size=6,
)


def points(spans: list[Range]) -> set[int]:
    return {p for start, end in spans for p in range(start, end)}


@given(ranges, ranges)
def test_subtract_removes_exactly_the_cut_points(wanted: list[Range], cut: list[Range]) -> None:
    result = subtract(wanted, cut)
    assert points(result) == points(wanted) - points(cut)
    assert all(start < end for start, end in result)
    if sum(end - start for start, end in wanted) == len(points(wanted)):  # disjoint input
        assert result == sorted(result)


def test_missing_runs_are_the_absent_expected_open_times() -> None:
    hours = [h * HOUR_MS for h in range(10)]
    present = {hours[0], hours[3], hours[4], hours[9]}
    assert missing_runs(hours, present, "1h") == [
        (hours[1], hours[3]),
        (hours[5], hours[9]),
    ]
    assert missing_runs(hours, set(), "1h") == [(0, 10 * HOUR_MS)]
    assert missing_runs(hours, set(hours), "1h") == []


def test_empty_slots_between_answered_open_times() -> None:
    h = HOUR_MS
    assert empty_slots([0, h, 2 * h], 5 * h, "1h") == [(3 * h, 5 * h)]
    assert empty_slots([2 * h, 0], 3 * h, "1h") == [(h, 2 * h)]
    assert empty_slots([0, h], 2 * h, "1h") == []


def test_ceil_open_rounds_up_to_a_period_start() -> None:
    assert ceil_open(0, "1h") == 0
    assert ceil_open(1, "1h") == HOUR_MS
    assert ceil_open(HOUR_MS, "1h") == HOUR_MS
    assert ceil_open(HOUR_MS + 1, "4h") == 4 * HOUR_MS


@given(
    st.sets(st.integers(0, 30)),
    st.integers(0, 30),
    st.integers(0, 40),
    st.integers(0, 45),
    st.booleans(),
)
def test_proven_empty_is_every_answered_hour_without_a_row(
    rows: set[int], start: int, end: int, now: int, with_head: bool
) -> None:
    # Hours as units: an answer over [start, end) with rows at `rows` (those inside it).
    rows = {h for h in rows if start <= h < end}
    stamps = [h * HOUR_MS for h in rows]
    head = start * HOUR_MS if with_head else None
    got = proven_empty(stamps, head, end * HOUR_MS, now * HOUR_MS + 1, "1h")
    from_hour = start if with_head else min(rows, default=end)
    newest_ended = now - 1  # left out: the exchange may publish it a moment late
    expected = {h * HOUR_MS for h in range(from_hour, end) if h not in rows and h < newest_ended}
    assert {p for a, b in got for p in range(a, b, HOUR_MS)} == expected
    assert proven_empty(stamps, head, end * HOUR_MS, now * HOUR_MS + 1, "1h", refused=1) == []
