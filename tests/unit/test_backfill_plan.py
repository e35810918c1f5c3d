"""The backfill's staging and estimates (pure): recent first, then deep."""

from __future__ import annotations

import itertools

from market_data.models import SeriesKey
from market_data.services.backfill_plan import (
    BackfillPlan,
    StageProgress,
    clip,
    describe_plan,
    estimate_requests,
    format_eta,
    items_for_stage,
    stage_bounds,
)
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = T0 + 40 * DAY_MS + 5 * HOUR_MS + 17 * MINUTE_MS
BTC = SeriesKey("BTCUSD", "1m")
ETH = SeriesKey("ETHUSD", "1h")


def test_ten_days_make_three_stages_newest_first() -> None:
    start = NOW - 10 * DAY_MS
    assert stage_bounds(start, NOW) == [
        ("day", NOW - DAY_MS, NOW),
        ("week", NOW - 7 * DAY_MS, NOW - DAY_MS),
        ("deep", start, NOW - 7 * DAY_MS),
    ]


def test_fewer_stages_when_the_range_is_short() -> None:
    assert [n for n, _, _ in stage_bounds(NOW - 5 * DAY_MS, NOW)] == ["day", "week"]
    assert stage_bounds(NOW - 7 * DAY_MS, NOW) == [
        ("day", NOW - DAY_MS, NOW),
        ("week", NOW - 7 * DAY_MS, NOW - DAY_MS),
    ]
    assert stage_bounds(NOW - HOUR_MS, NOW) == [("day", NOW - HOUR_MS, NOW)]
    assert stage_bounds(NOW, NOW) == []


def test_boundaries_align_to_the_coarsest_timeframe_of_the_group() -> None:
    # 1h with 4h derived from it: a boundary falls on a 4h open, so no 4h period is split.
    bounds = stage_bounds(NOW - 10 * DAY_MS, NOW, ["1h", "4h"])
    assert [lo for _, lo, _ in bounds[:2]] == [
        T0 + 39 * DAY_MS + 4 * HOUR_MS,
        T0 + 33 * DAY_MS + 4 * HOUR_MS,
    ]
    assert all(lo % (4 * HOUR_MS) == 0 for _, lo, _ in bounds[:-1])  # the last: the start
    # contiguous and covering [start, end)
    assert bounds[0][2] == NOW
    assert bounds[-1][1] == NOW - 10 * DAY_MS
    assert all(a[1] == b[2] for a, b in itertools.pairwise(bounds))


def test_an_explicit_past_range_is_staged_from_its_end() -> None:
    end = T0 + 20 * DAY_MS
    assert stage_bounds(T0, end)[0] == ("day", end - DAY_MS, end)
    assert stage_bounds(T0, end)[-1] == ("deep", T0, end - 7 * DAY_MS)


def test_request_estimates_are_pages_per_missing_window() -> None:
    assert estimate_requests([(T0, T0 + DAY_MS)], "1m", 10_000) == 1  # 1,440 candles
    assert estimate_requests([(T0, T0 + 7 * DAY_MS)], "1m", 10_000) == 2  # 10,080
    assert estimate_requests([(T0, T0 + 10_000 * MINUTE_MS)], "1m", 10_000) == 1
    assert (
        estimate_requests([(T0, T0 + MINUTE_MS), (T0 + DAY_MS, T0 + 2 * DAY_MS)], "1m", 10_000) == 2
    )
    assert estimate_requests([(T0, T0 + 400 * DAY_MS)], "1h", 10_000) == 1
    assert estimate_requests([], "1m", 10_000) == 0
    # a month has no fixed length: sized at 31 days, never below one request
    assert estimate_requests([(T0, T0 + 400 * DAY_MS)], "1M", 10_000) == 1


def test_items_hold_only_the_missing_windows_inside_their_stage() -> None:
    assert clip([(0, 10), (20, 30)], 5, 25) == [(5, 10), (20, 25)]
    assert clip([(0, 10)], 10, 20) == []
    day = (NOW - DAY_MS, NOW)
    missing = [(NOW - 3 * DAY_MS, NOW - 2 * HOUR_MS), (NOW - MINUTE_MS, NOW)]
    [btc, eth] = items_for_stage("day", {BTC: (*day, missing), ETH: (*day, [])}, 10_000)
    assert btc.windows == ((NOW - DAY_MS, NOW - 2 * HOUR_MS), (NOW - MINUTE_MS, NOW))
    assert (btc.stage, btc.start, btc.end, btc.requests) == ("day", *day, 2)
    assert eth.windows == ()
    assert eth.requests == 0


def test_plan_progress_re_estimates_and_gives_an_eta_at_the_spacing() -> None:
    plan = BackfillPlan(stages=[StageProgress("day"), StageProgress("week")], stage="day")
    day = (NOW - DAY_MS, NOW)
    week = (NOW - 7 * DAY_MS, NOW - DAY_MS)
    plan.set_items("day", items_for_stage("day", {BTC: (*day, [day]), ETH: (*day, [day])}, 10_000))
    plan.set_items(
        "week", items_for_stage("week", {BTC: (*week, [week]), ETH: (*week, [])}, 10_000)
    )
    summary = plan.summary(6.0)
    assert summary == {
        "stage": "day",
        "stages": [
            {"name": "day", "series": 2, "requests": 2, "requests_done": 0},
            {"name": "week", "series": 1, "requests": 1, "requests_done": 0},
        ],
        "requests_left": 3,
        "eta_seconds": 18.0,
    }
    plan.get("day").requests_done = 2
    plan.get("day").done = True
    plan.stage = "week"
    # the week turned out to be known already: re-estimated to nothing, done requests kept
    plan.set_items("week", items_for_stage("week", {BTC: (*week, [])}, 10_000))
    assert plan.requests_left == 0
    assert plan.get("day").requests == 2
    assert describe_plan(plan.summary(6.0)) == (
        "stage week, 0 requests left, ETA 0m00s (day 2/2, week 0/0)"
    )


def test_eta_text() -> None:
    assert format_eta(0) == "0m00s"
    assert format_eta(59.6) == "1m00s"
    assert format_eta(3 * 3600 + 125) == "3h02m"
