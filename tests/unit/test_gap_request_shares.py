"""How a gap repair run's request budget is split between the newest and the oldest gaps."""

from __future__ import annotations

from market_data.services.gaps.service import request_shares


def test_a_quarter_at_least_one_goes_to_the_oldest() -> None:
    assert request_shares(2, 0) == (1, 1)
    assert request_shares(4, 0) == (3, 1)
    assert request_shares(10, 0) == (8, 2)
    assert request_shares(100, 7) == (75, 25)


def test_a_single_request_alternates_so_neither_side_starves() -> None:
    assert [request_shares(1, run) for run in range(4)] == [(1, 0), (0, 1), (1, 0), (0, 1)]
