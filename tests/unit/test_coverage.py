"""Coverage runs: the pure merging and composing behind GET /coverage."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from market_data.services.coverage import (
    STATES,
    Run,
    State,
    compose,
    merge_runs,
    unchecked_windows,
)
from market_data.storage.base import CoverageRecords
from market_data.timeframes import HOUR_MS, MINUTE_MS

H = HOUR_MS
M = MINUTE_MS


def records(**values: object) -> CoverageRecords:
    base: dict[str, object] = {
        "first_ts": None,
        "last_ts": None,
        "candle_count": 0,
        "detect_low": None,
        "watermark": None,
        "gaps": [],
        "empty": [],
    }
    base.update(values)
    return CoverageRecords(**base)  # type: ignore[arg-type]


def test_nothing_recorded_is_one_unknown_run() -> None:
    assert merge_runs([], 0, 10) == [Run(0, 10, "unknown")]
    assert merge_runs([], 10, 10) == []


def test_higher_states_win_and_neighbours_merge() -> None:
    layers: list[tuple[int, int, State]] = [
        (0, 100, "stored"),
        (10, 20, "empty"),
        (15, 30, "gap"),
        (30, 40, "gap"),
        (50, 60, "failed"),
        (55, 58, "empty"),
        (90, 120, "stored"),
    ]
    assert merge_runs(layers, 0, 110) == [
        Run(0, 10, "stored"),
        Run(10, 15, "empty"),
        Run(15, 40, "gap"),
        Run(40, 50, "stored"),
        Run(50, 60, "failed"),
        Run(60, 110, "stored"),
    ]


def test_layers_are_clipped_to_the_window() -> None:
    assert merge_runs([(-50, 5, "gap"), (8, 500, "stored")], 0, 10) == [
        Run(0, 5, "gap"),
        Run(5, 8, "unknown"),
        Run(8, 10, "stored"),
    ]


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from(STATES)), max_size=12
    ),
    st.integers(0, 20),
    st.integers(1, 25),
)
def test_runs_tile_the_window_and_each_point_takes_the_highest_state(
    layers: list[tuple[int, int, State]], start: int, length: int
) -> None:
    end = start + length
    runs = merge_runs(layers, start, end)
    assert runs[0].start == start
    assert runs[-1].end == end
    for a, b in itertools.pairwise(runs):
        assert a.end == b.start
        assert a.state != b.state
    for point in range(start, end):
        covering = [s for a, b, s in layers if a <= point < b]
        want = max(covering, key=STATES.index) if covering else "unknown"
        got = next(r.state for r in runs if r.start <= point < r.end)
        assert got == want, (point, got, want)


def test_checked_range_is_stored_and_recorded_rows_paint_over_it() -> None:
    rec = records(
        first_ts=0,
        last_ts=99 * H,
        candle_count=90,
        detect_low=0,
        watermark=99 * H,
        gaps=[
            (10 * H, 12 * H, "open"),
            (20 * H, 21 * H, "failed"),
            (30 * H, 35 * H, "repaired"),
            (40 * H, 42 * H, "empty"),
        ],
        empty=[(50 * H, 53 * H)],
    )
    cov = compose(rec, "1h", 0, 110 * H, scanned=[], holes=[])
    assert cov.truncated is False
    assert cov.runs == [
        Run(0, 10 * H, "stored"),
        Run(10 * H, 12 * H, "gap"),
        Run(12 * H, 20 * H, "stored"),
        Run(20 * H, 21 * H, "failed"),
        Run(21 * H, 40 * H, "stored"),
        Run(40 * H, 42 * H, "empty"),
        Run(42 * H, 50 * H, "stored"),
        Run(50 * H, 53 * H, "empty"),
        Run(53 * H, 100 * H, "stored"),
        Run(100 * H, 110 * H, "unknown"),  # after the newest candle: not fetched (yet)
    ]


def test_unchecked_tail_is_searched_and_its_holes_are_unknown() -> None:
    rec = records(first_ts=0, last_ts=100 * M, candle_count=95, detect_low=0, watermark=60 * M)
    windows = unchecked_windows(rec, "1m")
    assert windows == [(60 * M, 100 * M)]
    cov = compose(rec, "1m", 0, 101 * M, scanned=windows, holes=[(70 * M, 75 * M)])
    assert cov.runs == [
        Run(0, 70 * M, "stored"),
        Run(70 * M, 75 * M, "unknown"),
        Run(75 * M, 101 * M, "stored"),
    ]


def test_never_checked_and_too_large_to_search_is_unknown_unless_the_count_proves_it() -> None:
    holed = records(first_ts=0, last_ts=99 * H, candle_count=97)
    assert unchecked_windows(holed, "1h") == [(0, 99 * H)]
    cov = compose(holed, "1h", 0, 100 * H, scanned=None, holes=[])
    assert cov.runs == [Run(0, 100 * H, "unknown")]
    complete = records(first_ts=0, last_ts=99 * H, candle_count=100)
    cov = compose(complete, "1h", 0, 100 * H, scanned=None, holes=[])
    assert cov.runs == [Run(0, 100 * H, "stored")]


def test_before_the_first_candle_is_unknown_and_the_head_window_is_searched() -> None:
    rec = records(
        first_ts=10 * H, last_ts=99 * H, candle_count=80, detect_low=20 * H, watermark=99 * H
    )
    assert unchecked_windows(rec, "1h") == [(10 * H, 20 * H)]
    cov = compose(rec, "1h", 0, 100 * H, scanned=[(10 * H, 20 * H)], holes=[])
    assert cov.runs == [Run(0, 10 * H, "unknown"), Run(10 * H, 100 * H, "stored")]


def test_a_cut_listing_stops_the_runs_where_it_stops_being_complete() -> None:
    rec = records(
        first_ts=0,
        last_ts=99 * H,
        candle_count=90,
        detect_low=0,
        watermark=99 * H,
        gaps=[(10 * H, 11 * H, "open")],
        complete_until=50 * H,
    )
    cov = compose(rec, "1h", 0, 100 * H, scanned=[], holes=[])
    assert cov.truncated is True
    assert cov.end == 50 * H
    assert cov.runs[-1].end == 50 * H
