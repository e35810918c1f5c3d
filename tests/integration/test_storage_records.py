"""Jobs, gaps, known-empty ranges and per-series state, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from market_data.models import GapStatus, SeriesKey
from market_data.storage.sql import SqlStore, open_store
from tests.plugins.db import delete_finished_jobs_before, record_gaps

H = 3_600_000
T0 = 1_699_999_200_000
BTC = SeriesKey("BTCUSD", "1h")
ETH = SeriesKey("ETHUSD", "1h")


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[tuple[SqlStore, Clock]]:
    clock = Clock()
    opened = open_store(database_url, clock=clock)
    await opened.upgrade()
    try:
        yield opened, clock
    finally:
        await opened.close()


async def test_jobs_lifecycle_and_listing(clocked: tuple[SqlStore, Clock]) -> None:
    store, _ = clocked
    backfill = await store.create_job("backfill", "BTCUSD", "1h")
    repair = await store.create_job("gap_repair")
    update = await store.create_job("update", "ETHUSD", "1h")
    await store.update_job_progress(backfill, 120)
    [listed] = await store.list_jobs(job_type="backfill")
    assert (listed.status, listed.candles_fetched, listed.completed_at) == ("running", 120, None)
    await store.finish_job(backfill, "success", 500)
    await store.finish_job(repair, "failed", 0, "exchange down " + "x" * 5_000)

    jobs = await store.list_jobs()
    assert [j.id for j in jobs] == [update, repair, backfill]  # newest first
    done = next(j for j in jobs if j.id == backfill)
    assert (done.status, done.candles_fetched, done.exchange) == ("success", 500, "bitfinex")
    assert done.completed_at is not None
    assert done.completed_at > done.started_at
    failed = next(j for j in jobs if j.id == repair)
    assert failed.last_error is not None
    assert failed.last_error.startswith("exchange down")
    assert len(failed.last_error) <= 2_000
    assert (failed.symbol, failed.timeframe) == (None, None)

    assert [j.id for j in await store.list_jobs(status="running")] == [update]
    assert [j.id for j in await store.list_jobs(symbol="BTCUSD")] == [backfill]
    assert [j.id for j in await store.list_jobs(limit=2)] == [update, repair]
    assert await store.list_jobs(limit=0) == []
    assert await store.list_jobs(job_type="cleanup") == []


async def test_fail_running_jobs_and_delete_old_ones(clocked: tuple[SqlStore, Clock]) -> None:
    store, clock = clocked
    old = await store.create_job("backfill")
    await store.finish_job(old, "success")
    running = [await store.create_job("update") for _ in range(3)]
    cutoff = clock.now + 1
    newer = await store.create_job("cleanup")
    await store.finish_job(newer, "success")

    assert await store.fail_running_jobs("interrupted") == 3
    assert await store.fail_running_jobs("interrupted") == 0
    for job in await store.list_jobs(job_type="update"):
        assert (job.status, job.last_error) == ("failed", "interrupted")
        assert job.completed_at is not None
    left = await store.create_job("ws_catchup")
    assert await store.fail_running_jobs("stopping", status="cancelled") == 1
    assert (await store.list_jobs(job_type="ws_catchup"))[0].status == "cancelled"

    assert await delete_finished_jobs_before(store, cutoff) == 4  # none left running
    assert {j.id for j in await store.list_jobs()} == {newer, left}
    assert running[0] not in {j.id for j in await store.list_jobs()}


async def test_job_arguments_are_checked(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="job type"):
        await store.create_job("nonsense")
    job = await store.create_job("update")
    with pytest.raises(ValueError, match="status"):
        await store.finish_job(job, "done")
    with pytest.raises(ValueError, match="cannot end"):
        await store.fail_running_jobs("x", status="running")


async def test_create_gaps_skips_recorded_ranges(clocked: tuple[SqlStore, Clock]) -> None:
    store, _ = clocked
    created = await record_gaps(store, BTC, [(T0 + 5 * H, T0 + 8 * H), (T0, T0 + 2 * H)])
    assert [(g.gap_start, g.gap_end) for g in created] == [
        (T0, T0 + 2 * H),
        (T0 + 5 * H, T0 + 8 * H),
    ]
    gap = created[0]
    assert (gap.status, gap.attempts, gap.repaired_at) == ("open", 0, None)
    assert gap.exchange == "bitfinex"
    assert gap.series == BTC
    # open or closed, a recorded start is never recorded twice; other series are separate
    await store.close_gap(created[1].id, "repaired", 3, T0 + 100 * H)
    again = await record_gaps(
        store, BTC, [(T0, T0 + 2 * H), (T0 + 5 * H, T0 + 9 * H), (T0 + 20 * H, T0 + 21 * H)]
    )
    assert [(g.gap_start, g.gap_end) for g in again] == [(T0 + 20 * H, T0 + 21 * H)]
    assert len(await record_gaps(store, ETH, [(T0, T0 + 2 * H)])) == 1
    assert await record_gaps(store, ETH, []) == []
    assert await record_gaps(store, ETH, [(T0 + 9 * H, T0 + 9 * H)]) == []  # empty range
    assert await store.count_open_gaps() == 3


async def test_list_gaps_filters_and_order(clocked: tuple[SqlStore, Clock]) -> None:
    store, _ = clocked
    btc = await record_gaps(
        store, BTC, [(T0 + i * 10 * H, T0 + (i * 10 + 2) * H) for i in range(4)]
    )
    eth = await record_gaps(store, ETH, [(T0 + 15 * H, T0 + 16 * H)])
    await store.close_gap(btc[0].id, "repaired", 2, T0 + 99 * H)
    await store.close_gap(btc[1].id, "empty", 0, T0 + 99 * H)
    await store.record_gap_failure(btc[2].id, "boom", T0 + 50 * H, failed=True)

    everything = await store.list_gaps()
    assert [g.id for g in everything] == [btc[3].id, btc[2].id, eth[0].id, btc[1].id, btc[0].id]
    assert [g.id for g in await store.list_gaps(repaired=True)] == [btc[1].id, btc[0].id]
    assert [g.id for g in await store.list_gaps(repaired=False)] == [
        btc[3].id,
        btc[2].id,
        eth[0].id,
    ]
    assert [g.id for g in await store.list_gaps(status="failed")] == [btc[2].id]
    assert [g.id for g in await store.list_gaps(symbol="ETHUSD")] == [eth[0].id]
    assert await store.list_gaps(timeframe="1d") == []
    assert [g.id for g in await store.list_gaps(limit=2)] == [btc[3].id, btc[2].id]
    due = await store.list_gaps(repaired=False, due_before_ms=T0 + 49 * H)
    assert btc[2].id not in {g.id for g in due}
    due = await store.list_gaps(repaired=False, due_before_ms=T0 + 50 * H)
    assert btc[2].id in {g.id for g in due}
    oldest_first = await store.list_gaps(oldest_first=True)
    assert [g.id for g in oldest_first] == [g.id for g in reversed(everything)]
    # `within` keeps the gaps lying wholly inside [start, end): gap repair's one-page window
    inside = await store.list_gaps(within=(T0 + 10 * H, T0 + 22 * H))
    assert [g.id for g in inside] == [btc[2].id, eth[0].id, btc[1].id]
    inside = await store.list_gaps(within=(T0 + 11 * H, T0 + 21 * H), oldest_first=True)
    assert [g.id for g in inside] == [eth[0].id]

    repaired = next(g for g in everything if g.id == btc[0].id)
    assert (repaired.status, repaired.candles_repaired, repaired.repaired_at) == (
        "repaired",
        2,
        T0 + 99 * H,
    )
    assert next(g for g in everything if g.id == btc[1].id).status == GapStatus.EMPTY


async def test_gap_failures_and_counts(store: SqlStore) -> None:
    [gap] = await record_gaps(store, BTC, [(T0, T0 + 3 * H)])
    await store.record_gap_failure(gap.id, "timeout", T0 + H, failed=False)
    [g] = await store.list_gaps()
    assert (g.attempts, g.status, g.last_error, g.next_attempt_at) == (1, "open", "timeout", T0 + H)
    await store.record_gap_failure(gap.id, "still down", T0 + 2 * H, failed=True)
    [g] = await store.list_gaps()
    assert (g.attempts, g.status, g.last_error) == (2, "failed", "still down")
    assert await store.count_open_gaps() == 1  # failed gaps are still open
    await store.close_gap(gap.id, "repaired", 3, T0 + 5 * H)
    [g] = await store.list_gaps()
    assert (g.status, g.next_attempt_at, g.attempts) == ("repaired", None, 2)
    assert await store.count_open_gaps() == 0
    await store.record_gap_failure(gap.id, "late", T0, failed=True)  # a closed gap stays closed
    assert (await store.list_gaps())[0].status == "repaired"
    with pytest.raises(ValueError, match="repaired or empty"):
        await store.close_gap(gap.id, "open", 0, T0)


async def test_delete_gaps_and_empty_ranges_before(store: SqlStore) -> None:
    await record_gaps(
        store, BTC, [(T0, T0 + H), (T0 + 5 * H, T0 + 7 * H), (T0 + 9 * H, T0 + 10 * H)]
    )
    await record_gaps(store, ETH, [(T0, T0 + H)])
    await store.add_empty_ranges(BTC, [(T0, T0 + H), (T0 + 6 * H, T0 + 8 * H)])
    assert await store.delete_gaps_before(BTC, T0 + 7 * H) == 2
    assert [(g.gap_start, g.symbol) for g in await store.list_gaps()] == [
        (T0 + 9 * H, "BTCUSD"),
        (T0, "ETHUSD"),
    ]
    assert await store.empty_ranges(BTC, 0, T0 + 100 * H) == [(T0 + 6 * H, T0 + 8 * H)]


async def test_empty_ranges(store: SqlStore) -> None:
    assert await store.empty_ranges(BTC, T0, T0 + 10 * H) == []
    await store.add_empty_ranges(BTC, [(T0 + 2 * H, T0 + 4 * H), (T0 + 6 * H, T0 + 7 * H)])
    await store.add_empty_ranges(BTC, [(T0 + 2 * H, T0 + 5 * H), (T0 + 2 * H, T0 + 3 * H)])
    await store.add_empty_ranges(ETH, [(T0, T0 + H), (T0 + H, T0 + H)])
    assert await store.empty_ranges(BTC, T0, T0 + 10 * H) == [
        (T0 + 2 * H, T0 + 5 * H),
        (T0 + 6 * H, T0 + 7 * H),
    ]
    # overlap with [start, end): touching ends do not count
    assert await store.empty_ranges(BTC, T0 + 5 * H, T0 + 6 * H) == []
    assert await store.empty_ranges(BTC, T0 + 4 * H, T0 + 6 * H + 1) == [
        (T0 + 2 * H, T0 + 5 * H),
        (T0 + 6 * H, T0 + 7 * H),
    ]
    assert await store.empty_ranges(ETH, T0, T0 + 10 * H) == [(T0, T0 + H)]


async def test_scan_states_and_retention_horizon(store: SqlStore) -> None:
    assert await store.scan_states() == {}
    assert await store.get_retention_horizon(BTC) is None
    await store.set_scan_states({BTC: (T0 - 10 * H, T0)})
    await store.set_retention_horizon(BTC, T0 - 100 * H)
    await store.set_scan_states({BTC: (T0 - 10 * H, T0 + 5 * H)})
    assert (await store.scan_states())[BTC] == (T0 - 10 * H, T0 + 5 * H, T0 - 100 * H)
    assert await store.get_retention_horizon(BTC) == T0 - 100 * H
    await store.set_retention_horizon(ETH, T0)
    assert (await store.scan_states())[ETH] == (None, None, T0)
    assert await store.get_retention_horizon(ETH) == T0
