"""Confirming a coarser series from its 1m sibling's check: the run of proven minutes, when the
coarser series' own check is left to the sibling, the aggregate compared with the stored candle,
and the whole round against a real store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from market_data.models import Candle, SeriesKey
from market_data.services.live.pending import DueRules, Pending, UncheckedFinals
from market_data.services.live.sibling import (
    Coverage,
    SiblingConfirm,
    decide,
    expected_candle,
    extend,
    same_candle,
    sibling_of,
    waits,
    whole_periods,
)
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
M = SeriesKey("ZRXUSD", "1m")
H = SeriesKey("ZRXUSD", "1h")
FIVE = SeriesKey("ZRXUSD", "5m")


def minute(ts: int, o: float, h: float, lo: float, c: float, v: float) -> Candle:
    return Candle(M.symbol, "1m", ts, o, h, lo, c, v)


def hour(ts: int, o: float, h: float, lo: float, c: float, v: float, final: bool = True) -> Candle:
    return Candle(H.symbol, "1h", ts, o, h, lo, c, v, final)


def test_only_minute_aligned_fixed_native_timeframes_have_a_sibling() -> None:
    assert sibling_of(H) == M
    assert sibling_of(SeriesKey("ZRXUSD", "1d")) == M
    for tf in ("1m", "1w", "14d", "1M", "2h", "4h"):
        assert sibling_of(SeriesKey("ZRXUSD", tf)) is None


def test_successive_checks_extend_one_run_and_a_jump_starts_another() -> None:
    run = extend(None, T0, T0 + 30 * MINUTE_MS, None)
    assert run == Coverage(T0, T0 + 30 * MINUTE_MS)
    run = extend(run, T0 + 30 * MINUTE_MS, T0 + 90 * MINUTE_MS, None)
    assert run == Coverage(T0, T0 + 90 * MINUTE_MS)
    # A check that left minutes unproven proves up to them and marks where it stalled.
    stalled = extend(run, T0 + 90 * MINUTE_MS, T0 + 95 * MINUTE_MS, T0 + 95 * MINUTE_MS)
    assert stalled == Coverage(T0, T0 + 95 * MINUTE_MS, T0 + 95 * MINUTE_MS)
    # The next check takes them again: the run goes on, the stall is over.
    assert extend(stalled, T0 + 95 * MINUTE_MS, T0 + 2 * HOUR_MS, None) == Coverage(
        T0, T0 + 2 * HOUR_MS
    )
    # An older re-check (a late correction) leaves the run as it was.
    assert extend(run, T0 - 10 * MINUTE_MS, T0 - 5 * MINUTE_MS, None) == run
    # One that reaches into the run extends it backwards.
    assert extend(run, T0 - 10 * MINUTE_MS, T0 + 5 * MINUTE_MS, None).start == T0 - 10 * MINUTE_MS
    # A jump (minutes nobody proved) starts a new run: what was before is not joined.
    assert extend(run, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS, None) == Coverage(
        T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS
    )


def test_a_coarser_series_waits_while_its_sibling_can_confirm_its_oldest_period() -> None:
    run = Coverage(T0, T0 + 90 * MINUTE_MS)
    nxt = T0 + 90 * MINUTE_MS  # the sibling's next minute to check: right after the run
    assert waits(T0, "1h", run, nxt)
    assert waits(T0 + HOUR_MS, "1h", run, nxt)  # not yet covered, but the run goes on
    assert not waits(T0 - HOUR_MS, "1h", run, nxt)  # began before the run: its own check
    # Before its first check the sibling's pending span is the run to come.
    assert waits(T0, "1h", None, T0)
    assert not waits(T0, "1h", None, T0 + MINUTE_MS)
    assert not waits(T0, "1h", None, None)
    # A run the sibling's checks no longer extend (its next minute is past it) is over.
    assert not waits(T0, "1h", run, nxt + MINUTE_MS)
    assert waits(nxt + MINUTE_MS, "5m", run, nxt + MINUTE_MS)
    # A stall inside the oldest period: its own check; a stall after it: still the sibling's.
    stalled = replace(run, end=T0 + 70 * MINUTE_MS, stalled=T0 + 70 * MINUTE_MS)
    assert not waits(T0 + HOUR_MS, "1h", stalled, T0 + 70 * MINUTE_MS)
    assert waits(T0, "1h", stalled, T0 + 70 * MINUTE_MS)


def test_only_whole_periods_inside_the_run_count() -> None:
    run = Coverage(T0, T0 + 150 * MINUTE_MS)
    assert whole_periods(run, T0, T0 + 5 * HOUR_MS, "1h") == (T0, T0 + 2 * HOUR_MS)
    assert whole_periods(run, T0, T0, "1h") == (T0, T0 + HOUR_MS)  # no more than pending
    assert whole_periods(run, T0 + 2 * HOUR_MS, T0 + 5 * HOUR_MS, "1h") is None
    assert whole_periods(run, T0 - HOUR_MS, T0 + 5 * HOUR_MS, "1h") is None
    assert whole_periods(run, T0, T0 + HOUR_MS, "5m") == (T0, T0 + HOUR_MS + 5 * MINUTE_MS)


def test_the_expected_candle_is_the_aggregate_with_the_exchanges_volume_precision() -> None:
    members = [
        minute(T0 + 3 * MINUTE_MS, 10.0, 12.0, 9.5, 11.0, 0.1),
        minute(T0 + 7 * MINUTE_MS, 11.0, 13.5, 10.5, 12.5, 0.2),
        minute(T0 + 59 * MINUTE_MS, 12.5, 12.75, 8.0, 9.0, 0.00000001),
    ]
    want = expected_candle(members, "1h")
    assert want == hour(T0, 10.0, 13.5, 8.0, 9.0, 0.30000001)
    assert 0.1 + 0.2 + 0.00000001 != 0.30000001  # what a plain float sum would have stored


def test_a_stored_candle_is_equal_within_float_noise_and_different_by_a_unit() -> None:
    want = hour(T0, 10.0, 13.5, 8.0, 9.0, 0.3)
    assert same_candle(want, want)
    assert same_candle(replace(want, volume=0.1 + 0.2), want)  # binary noise
    assert same_candle(replace(want, volume=1e9 + 1e-6), replace(want, volume=1e9))  # ulps
    assert not same_candle(replace(want, volume=0.30000001), want)  # one unit: a lost trade
    assert not same_candle(replace(want, close=9.000001), want)
    assert not same_candle(replace(want, high=13.4), want)


def test_decide_writes_what_differs_or_misses_and_records_quiet_periods_empty() -> None:
    end = T0 + 6 * HOUR_MS
    minutes = [
        minute(T0 + 1 * MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 1.0),  # hour 0: stored right
        minute(T0 + HOUR_MS + 2 * MINUTE_MS, 1.5, 1.6, 1.4, 1.45, 2.0),  # hour 1: stored stale
        minute(T0 + HOUR_MS + 9 * MINUTE_MS, 1.45, 1.7, 1.3, 1.6, 0.5),
        minute(T0 + 2 * HOUR_MS, 1.6, 1.6, 1.6, 1.6, 0.25),  # hour 2: missing
        minute(T0 + 5 * HOUR_MS, 1.7, 1.7, 1.7, 1.7, 0.5),  # hour 5: stored, not final
        # hours 3 and 4 quiet: one empty range
    ]
    stored = [
        hour(T0, 1.0, 2.0, 0.5, 1.5, 1.0),
        hour(T0 + HOUR_MS, 1.5, 1.6, 1.4, 1.45, 2.0),  # the stream lost the second minute
        hour(T0 + 5 * HOUR_MS, 1.7, 1.7, 1.7, 1.7, 0.5, final=False),
    ]
    verdict = decide(H, T0, end, minutes, stored)
    assert verdict.write == [
        hour(T0 + HOUR_MS, 1.5, 1.7, 1.3, 1.6, 2.5),
        hour(T0 + 2 * HOUR_MS, 1.6, 1.6, 1.6, 1.6, 0.25),
        hour(T0 + 5 * HOUR_MS, 1.7, 1.7, 1.7, 1.7, 0.5),
    ]
    assert verdict.empty == [(T0 + 3 * HOUR_MS, T0 + 5 * HOUR_MS)]
    assert (verdict.compared, verdict.extra) == (4, 0)


def test_a_stored_candle_where_no_minute_traded_is_left_alone_not_recorded_empty() -> None:
    stored = [hour(T0 + HOUR_MS, 1.0, 1.0, 1.0, 1.0, 1.0)]
    verdict = decide(H, T0, T0 + 3 * HOUR_MS, [], stored)
    assert verdict.write == []
    assert verdict.empty == [(T0, T0 + HOUR_MS), (T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS)]
    assert verdict.extra == 1


def test_pending_periods_settled_by_other_means_leave_the_rest_pending() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(H, T0 + HOUR_MS)  # a stream final among quiet hours
    unchecked.watch(H, T0 + 30 * MINUTE_MS)
    unchecked.advance(T0 + 4 * HOUR_MS)
    assert unchecked.waiting(H) == Pending(T0 - HOUR_MS, T0 + 3 * HOUR_MS, T0 + HOUR_MS)
    unchecked.confirm_through(H, T0 - 2 * HOUR_MS)  # before the span: nothing
    assert unchecked.oldest(H) == T0 - HOUR_MS
    unchecked.confirm_through(H, T0 + HOUR_MS)
    assert unchecked.waiting(H) == Pending(T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS, T0 + 2 * HOUR_MS)
    unchecked.confirm_through(H, T0 + 3 * HOUR_MS)
    assert unchecked.waiting(H) is None
    assert unchecked.oldest(H) == T0 + 4 * HOUR_MS  # the watch goes on
    unchecked.unwatch(H)
    assert unchecked.oldest(H) is None


def test_a_1m_watch_starts_where_its_siblings_do() -> None:
    unchecked = UncheckedFinals()
    ready = T0 + 5 * HOUR_MS + 20 * MINUTE_MS
    pairs = {M: "ZRXUSD", H: "ZRXUSD", FIVE: "ZRXUSD"}
    sibling = SiblingConfirm(None, _no_write, unchecked, pairs)  # type: ignore[arg-type]
    assert sibling.siblings(M) == [FIVE, H]
    assert sibling.siblings(H) == []
    assert sibling.watch_from(M, ready) == T0 + 4 * HOUR_MS  # the hour before the ready one
    assert sibling.watch_from(SeriesKey("OTHER", "1m"), ready) is None
    unchecked.watch(M, ready, sibling.watch_from(M, ready))
    unchecked.watch(H, ready)
    assert unchecked.oldest(M) == unchecked.oldest(H) == T0 + 4 * HOUR_MS


def test_the_coarser_series_is_never_due_while_the_sibling_is_watched() -> None:
    rules = DueRules(batch_age_ms=30_000, grace_ms=3_000)
    unchecked = UncheckedFinals()
    pairs = {M: "ZRXUSD", H: "ZRXUSD"}
    sibling = SiblingConfirm(None, _no_write, unchecked, pairs)  # type: ignore[arg-type]
    unchecked.watch(M, T0, sibling.watch_from(M, T0))
    unchecked.watch(H, T0)
    unchecked.note(H, T0)  # even with a stream final
    unchecked.advance(T0 + 5 * HOUR_MS)
    now = T0 + 5 * HOUR_MS
    assert sibling.waits(H)
    assert unchecked.most_overdue(now, rules, sibling.waits) == M
    assert unchecked.next_due_ms(rules, lambda s: s == M or sibling.waits(s)) is None
    # Once the 1m series is no longer streamed, the 1h series is checked as before.
    unchecked.unwatch(M)
    sibling.forget(M)
    assert not sibling.waits(H)
    assert unchecked.most_overdue(now, rules, lambda s: s == M or sibling.waits(s)) == H


@pytest.mark.parametrize("backend", ["sqlite"])  # plain reads and writes: one backend
async def test_a_round_confirms_whole_hours_from_stored_minutes(store: SqlStore) -> None:
    unchecked = UncheckedFinals()
    pairs = {M: "ZRXUSD", H: "ZRXUSD"}
    written: list[Candle] = []

    async def write(candles: Sequence[Candle]) -> None:
        written.extend(candles)
        await store.upsert_candles(candles)

    sibling = SiblingConfirm(store, write, unchecked, pairs)
    ready = T0 + 20 * MINUTE_MS
    unchecked.watch(M, ready, sibling.watch_from(M, ready))
    unchecked.watch(H, ready)
    unchecked.advance(T0 + 3 * HOUR_MS)
    await store.upsert_candles(
        [
            minute(T0 + 5 * MINUTE_MS, 1.0, 1.2, 0.9, 1.1, 0.1),
            minute(T0 + 6 * MINUTE_MS, 1.1, 1.3, 1.0, 1.2, 0.2),
            minute(T0 + 2 * HOUR_MS + MINUTE_MS, 1.2, 1.2, 1.2, 1.2, 0.5),  # not covered yet
            hour(T0, 1.0, 1.2, 0.9, 1.1, 0.1),  # the stream lost the second minute
        ]
    )
    # The 1m check proved [T0 - 1h, T0 + 2h + 30m): hours -1, 0 and 1 are whole inside.
    got = await sibling.confirmed(M, T0 - HOUR_MS, T0 + 150 * MINUTE_MS, None)
    assert (got.periods, got.compared, got.corrected, got.empty_periods) == (3, 1, 1, 2)
    assert written == [hour(T0, 1.0, 1.3, 0.9, 1.2, 0.3)]
    assert await store.candles_in_range(H, T0 - HOUR_MS, T0 + 3 * HOUR_MS) == written
    empty = await store.empty_ranges(H, T0 - HOUR_MS, T0 + 3 * HOUR_MS)
    assert empty == [(T0 - HOUR_MS, T0), (T0 + HOUR_MS, T0 + 2 * HOUR_MS)]
    assert unchecked.oldest(H) == T0 + 2 * HOUR_MS  # the rest waits for the next 1m check
    # The next check goes on from there; the hour with a trade is written.
    got = await sibling.confirmed(M, T0 + 150 * MINUTE_MS, T0 + 3 * HOUR_MS, None)
    assert (got.periods, got.corrected) == (1, 1)
    assert written[-1] == hour(T0 + 2 * HOUR_MS, 1.2, 1.2, 1.2, 1.2, 0.5)
    assert unchecked.waiting(H) is None


async def _no_write(candles: Sequence[Candle]) -> None:
    raise AssertionError("nothing to write")
