"""A repair the exchange keeps failing backs off, becomes `failed`, and is still retried."""

from __future__ import annotations

from market_data.models import SeriesKey
from market_data.services.gap_repair import RetryPolicy
from market_data.simulator import Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align
from tests.integration.gap_support import candles_requests, fill, make_settings, punch, rig

BTC1H = SeriesKey("BTCUSD", "1h")


async def test_failing_repair_backs_off_then_fails_and_stays_listed(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator.rest_url)
    clock = [simulator.market.now_ms()]
    policy = RetryPolicy(max_attempts=3, base_backoff_ms=MINUTE_MS, failed_retry_ms=6 * HOUR_MS)
    r = rig(settings, store, clock=lambda: clock[0], policy=policy)
    start, end = align(clock[0] - 2 * DAY_MS, "1d"), align(clock[0], "1h")
    await fill(r.sink, simulator, "BTCUSD", "1h", start, end)
    hole = (start + 10 * HOUR_MS, start + 12 * HOUR_MS)
    await punch(store, BTC1H, *hole)
    assert len((await r.gaps.detect()).new_gaps) == 1

    await r.rest.pair_for("BTCUSD")  # the pair list is loaded (and cached) before the outage
    simulator.set_faults(rest_error_rate=1.0)  # every answer a 5xx from the "proxy"

    async def attempt() -> int:
        before = candles_requests(simulator)
        report = await r.gaps.repair()
        assert report.repaired == 0
        return candles_requests(simulator) - before

    delays = []
    for number in range(1, 4):
        assert await attempt() == 1, f"attempt {number} asks the exchange"
        assert await attempt() == 0, "not due again before its backoff ends"
        gap = (await store.list_gaps(repaired=False))[0]
        assert gap.attempts == number
        assert gap.next_attempt_at is not None
        delays.append(gap.next_attempt_at - clock[0])
        clock[0] = gap.next_attempt_at
    assert delays == [MINUTE_MS, 2 * MINUTE_MS, 6 * HOUR_MS]
    gap = (await store.list_gaps(repaired=False))[0]
    assert gap.status == "failed"
    assert "ExchangeUnavailable" in (gap.last_error or "")
    assert (gap.gap_start, gap.gap_end) == hole
    assert await store.count_open_gaps() == 1  # failed gaps stay in the backlog
    jobs = await store.list_jobs(job_type="gap_repair", limit=20)
    assert len([j for j in jobs if j.status == "failed" and "HTTP 5" in (j.last_error or "")]) == 3

    # The slow cadence: the exchange recovered, and the failed gap is retried and repaired.
    simulator.set_faults(rest_error_rate=0.0)
    report = await r.gaps.repair()
    assert report.repaired == 1
    assert report.candles == 2
    assert [g.status for g in await store.list_gaps()] == ["repaired"]
    await r.close()
