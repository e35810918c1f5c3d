"""UncheckedFinals: one bounded span per series, most overdue first, settle what was unproven;
watched series' quiet periods pending, and the due rules that keep their confirmation to about
one request per series an hour."""

from __future__ import annotations

import itertools

import pytest

from market_data.models import SeriesKey
from market_data.services.live.pending import DueRules, Pending, UncheckedFinals
from market_data.timeframes import HOUR_MS, MINUTE_MS, align, next_open, previous_open

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BTC = SeriesKey("BTCUSD", "1m")
ETH = SeriesKey("ETHUSD", "1m")
SOL_1H = SeriesKey("SOLUSD", "1h")
NOW_RULES = DueRules(batch_age_ms=0, grace_ms=0)  # finals due as soon as they closed


def test_a_span_per_series_whatever_the_number_of_candles() -> None:
    unchecked = UncheckedFinals()
    for i in range(10_000):
        unchecked.note(BTC, T0 + i * MINUTE_MS)
    unchecked.note(BTC, T0 - 5 * MINUTE_MS)  # an older correction widens the span
    assert len(unchecked) == 1
    taken = unchecked.take(BTC, 20_000, T0)
    assert taken is not None
    assert taken.span == (T0 - 5 * MINUTE_MS, T0 + 9_999 * MINUTE_MS)
    assert unchecked.take(BTC, 20_000, T0) is None


def test_a_span_longer_than_a_page_is_checked_a_page_at_a_time() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(BTC, T0)
    unchecked.note(BTC, T0 + 24_999 * MINUTE_MS)
    spans = []
    while (taken := unchecked.take(BTC, 10_000, T0)) is not None:
        spans.append(taken.span)
        unchecked.settle(BTC, None)
    assert spans == [
        (T0, T0 + 9_999 * MINUTE_MS),
        (T0 + 10_000 * MINUTE_MS, T0 + 19_999 * MINUTE_MS),
        (T0 + 20_000 * MINUTE_MS, T0 + 24_999 * MINUTE_MS),
    ]


def test_most_overdue_goes_first_once_it_is_due() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(BTC, T0 + 2 * MINUTE_MS)
    unchecked.note(ETH, T0 + MINUTE_MS)
    unchecked.note(SOL_1H, T0)  # closes at T0 + 1h: the latest of the three
    assert unchecked.most_overdue(T0 + MINUTE_MS, NOW_RULES) is None  # nothing closed by then
    assert unchecked.most_overdue(T0 + 2 * MINUTE_MS, NOW_RULES) == ETH
    assert unchecked.most_overdue(T0 + HOUR_MS, NOW_RULES) == ETH
    assert unchecked.most_overdue(T0 + HOUR_MS, NOW_RULES, skip={ETH}.__contains__) == BTC
    assert unchecked.next_due_ms(NOW_RULES) == T0 + 2 * MINUTE_MS


def test_a_span_being_checked_still_counts_as_unchecked_until_settled() -> None:
    unchecked = UncheckedFinals()
    unchecked.note(BTC, T0)
    unchecked.note(BTC, T0 + 3 * MINUTE_MS)
    taken = unchecked.take(BTC, 10_000, T0 + HOUR_MS)
    assert taken is not None
    assert taken.span == (T0, T0 + 3 * MINUTE_MS)
    assert unchecked.oldest_close_ms() == T0 + MINUTE_MS  # the age gauge does not dip
    assert unchecked.most_overdue(T0 + HOUR_MS, NOW_RULES) is None  # not picked twice
    unchecked.note(BTC, T0 + 4 * MINUTE_MS)  # finalized while the check runs
    unchecked.settle(BTC, taken.left((T0 + MINUTE_MS, T0 + MINUTE_MS)))  # a refused row
    again = unchecked.take(BTC, 10_000, T0 + HOUR_MS)
    assert again is not None
    assert again.span == (T0 + MINUTE_MS, T0 + 4 * MINUTE_MS)
    assert again.final == T0 + MINUTE_MS
    unchecked.settle(BTC, None)
    assert len(unchecked) == 0
    assert unchecked.oldest_close_ms() is None


def test_watched_quiet_periods_are_pending_without_a_frame_and_survive_a_reconnect() -> None:
    unchecked = UncheckedFinals()
    ready = T0 + 10 * MINUTE_MS + 20_000  # mid-period
    unchecked.watch(BTC, ready)
    # The period before the ready one too: the start-up catch-up cannot prove it.
    assert unchecked.oldest_unconfirmed() == {BTC: T0 + 9 * MINUTE_MS}
    unchecked.advance(T0 + 15 * MINUTE_MS)  # minutes 9..14 closed, no update came
    assert unchecked.periods() == 6
    assert unchecked.oldest_close_ms() is None  # no stream final: the age gauge stays at 0
    assert unchecked.final_series() == 0
    unchecked.watch(BTC, T0 + 15 * MINUTE_MS)  # a reconnect: the watch and the span stay
    unchecked.advance(T0 + 16 * MINUTE_MS)
    taken = unchecked.take(BTC, 10_000, T0 + 16 * MINUTE_MS)
    assert taken == Pending(T0 + 9 * MINUTE_MS, T0 + 15 * MINUTE_MS, None)
    # Gap detection stays behind what is being checked.
    assert unchecked.oldest_unconfirmed() == {BTC: T0 + 9 * MINUTE_MS}
    unchecked.settle(BTC, None)
    assert unchecked.oldest_unconfirmed() == {BTC: T0 + 16 * MINUTE_MS}


def test_a_stream_final_makes_a_quiet_series_due_at_once() -> None:
    rules = DueRules(batch_age_ms=30_000, grace_ms=3_000)
    unchecked = UncheckedFinals()
    unchecked.watch(BTC, T0)
    unchecked.advance(T0 + 5 * MINUTE_MS)
    assert unchecked.most_overdue(T0 + 6 * MINUTE_MS, rules) is None  # quiet: not yet
    unchecked.note(BTC, T0 + 5 * MINUTE_MS)
    assert unchecked.most_overdue(T0 + 6 * MINUTE_MS + 29_000, rules) is None
    assert unchecked.most_overdue(T0 + 6 * MINUTE_MS + 30_000, rules) == BTC


def quiet_checks(tf: str, hours: int, rules: DueRules) -> list[tuple[int, Pending]]:
    """A quiet watched series on a virtual clock stepped by seconds: when each check starts and
    the span it takes. Each check proves everything but the newest ended period (a page never
    proves that one empty)."""
    key = SeriesKey("ZRXUSD", tf)
    unchecked = UncheckedFinals()
    unchecked.watch(key, T0)
    checks: list[tuple[int, Pending]] = []
    for now in range(T0, T0 + hours * HOUR_MS, 1_000):
        closed_by = now - rules.grace_ms
        unchecked.advance(closed_by)
        if unchecked.most_overdue(now, rules) is None:
            continue
        taken = unchecked.take(key, 10_000, now)
        assert taken is not None
        checks.append((now, taken))
        newest_ended = previous_open(align(closed_by, tf), tf)
        left = None
        if taken.newest >= newest_ended:
            left = Pending(max(taken.oldest, newest_ended), taken.newest)
        unchecked.settle(key, left)
    return checks


@pytest.mark.parametrize("tf", ["1m", "1h"])
def test_a_quiet_series_costs_one_request_an_hour_and_waits_about_an_hour(tf: str) -> None:
    rules = DueRules(batch_age_ms=30_000, grace_ms=3_000)
    checks = quiet_checks(tf, 12, rules)
    starts = [at for at, _ in checks]
    assert len(checks) >= 10
    # The budget: never two requests for the series within an hour.
    assert min(b - a for a, b in itertools.pairwise(starts)) >= HOUR_MS
    assert len(checks) <= 12
    # Every period is confirmed: the spans follow each other without a hole.
    for (_, earlier), (_, later) in itertools.pairwise(checks):
        assert later.oldest <= next_open(earlier.newest, tf)
    # A candle the stream missed is compared (and written) by the first check after its period
    # closed: within the hour. The oldest pending period (the one the previous check could
    # not prove empty) waits one period more at most.
    covered = T0  # periods before this were taken by an earlier check
    for at, taken in checks:
        period = covered
        while period <= taken.newest:
            if period >= taken.oldest:
                assert at - next_open(period, tf) <= HOUR_MS + rules.grace_ms, (period, at)
            period = next_open(period, tf)
        covered = next_open(taken.newest, tf)
    assert max(at - next_open(t.oldest, tf) for at, t in checks) <= HOUR_MS + MINUTE_MS
