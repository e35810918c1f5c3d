"""GAP_REPAIR_MAX_REPAIRS_PER_RUN counts exchange requests, not gap rows: the open gaps of a series
that fit in one exchange page share one request, and the oldest backlog gets a share of every
run. Against the simulator (real sockets) on SQLite and PostgreSQL; requests are counted by the
simulator itself."""

from __future__ import annotations

from market_data.models import SeriesKey
from market_data.simulator import THIN_PAIR, Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align
from tests.integration.gap_support import (
    candles_requests,
    fill,
    make_settings,
    punch,
    rig,
    values,
)


async def test_fifty_gaps_in_one_page_are_closed_by_one_request(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    # A thin pair: most minutes had no trades (their gaps close as empty); a few traded minutes
    # are deleted as well (their gaps close as repaired). Everything lies inside one page.
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols=THIN_PAIR,
        bitfinex_timeframes="1m",
        gap_repair_max_repairs_per_run=1,
    )
    r = rig(settings, store)
    series = SeriesKey(THIN_PAIR.replace(":", ""), "1m")
    now = simulator.market.now_ms()
    start, end = align(now - 16 * HOUR_MS, "1h"), align(now - HOUR_MS, "1m")
    truth = await fill(r.sink, simulator, series.symbol, "1m", start, end)
    traded = [c.ts for c in truth[1:-1]]
    for ts in traded[::7]:
        await punch(store, series, ts, ts + MINUTE_MS)
    page_minutes = r.exchange.limits.page_size
    assert (end - start) // MINUTE_MS < page_minutes

    gaps = (await r.gaps.detect()).new_gaps
    assert len(gaps) >= 50
    before = candles_requests(simulator)
    report = await r.gaps.repair()  # a budget of one request

    assert candles_requests(simulator) - before == 1
    assert report.requests == 1
    assert report.open_gaps == 0
    assert report.repaired + report.empty == len(gaps)
    assert values(await store.candles_in_range(series, start, end)) == values(truth)
    truth_ts = {c.ts for c in truth}
    closed = {g.id: g for g in await store.list_gaps(repaired=True, limit=10_000)}
    assert set(closed) == {g.id for g in gaps}
    for gap in closed.values():
        had_trades = any(gap.gap_start <= ts < gap.gap_end for ts in truth_ts)
        assert gap.status == ("repaired" if had_trades else "empty"), gap
    assert report.repaired == len(traded[::7])
    await r.close()


SERIES = [SeriesKey(s, "1h") for s in ("BTCUSD", "ETHUSD", "SOLUSD")]


async def test_the_limit_counts_requests_not_gaps(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols=",".join(s.symbol for s in SERIES),
        gap_repair_max_repairs_per_run=2,
    )
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 4 * DAY_MS, "1d"), align(now, "1h")
    for series in SERIES:
        await fill(r.sink, simulator, series.symbol, "1h", start, end)
        for n in range(10, 70, 6):  # ten one-hour holes per series, all inside one page
            await punch(store, series, start + n * HOUR_MS, start + (n + 1) * HOUR_MS)
    assert len((await r.gaps.detect()).new_gaps) == 30

    before = candles_requests(simulator)
    report = await r.gaps.repair()  # GAP_REPAIR_MAX_REPAIRS_PER_RUN=2: two requests
    assert candles_requests(simulator) - before == 2
    assert report.requests == 2
    assert (report.repaired, report.failures, report.open_gaps) == (20, 0, 10)
    open_series = {g.series for g in await store.list_gaps(repaired=False)}
    assert len(open_series) == 1

    before = candles_requests(simulator)
    assert (await r.gaps.repair(max_repairs=1)).repaired == 10
    assert candles_requests(simulator) - before == 1
    assert await store.count_open_gaps() == 0
    await r.close()


async def test_the_oldest_backlog_gets_a_share_of_every_run(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    # Four series keep opening new gaps (more than the run's recent share can serve); two others
    # carry an old backlog. Newest-first alone would never reach the backlog.
    streaming = [*SERIES, SeriesKey("BTCUSD", "5m")]
    backlog = [SeriesKey("ETHUSD", "5m"), SeriesKey("SOLUSD", "5m")]
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols="BTCUSD,ETHUSD,SOLUSD",
        bitfinex_timeframes="5m,1h",
        gap_repair_max_repairs_per_run=4,  # three requests for recent gaps, one for the oldest
    )
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 4 * DAY_MS, "1d"), align(now, "1h")
    for series in streaming + backlog:
        await fill(r.sink, simulator, series.symbol, series.timeframe, start, end)
    await r.gaps.detect()
    await r.gaps.repair(max_repairs=0)  # the periods that had no trades are known from here on
    assert await store.count_open_gaps() == 0
    for series in backlog:
        for n in (2, 5, 9):
            await punch(store, series, start + n * HOUR_MS, start + n * HOUR_MS + 5 * MINUTE_MS)
    assert len((await r.gaps.detect(full=True)).new_gaps) == 6

    backlog_open = 6
    for cycle in range(len(backlog)):
        hole = end - (10 - 2 * cycle) * HOUR_MS  # a new hole in every streaming series
        for series in streaming:
            await punch(store, series, hole, hole + HOUR_MS)
        assert len((await r.gaps.detect(full=True)).new_gaps) == len(streaming)

        before = candles_requests(simulator)
        report = await r.gaps.repair()
        assert candles_requests(simulator) - before == 4
        open_backlog = [g for g in await store.list_gaps(repaired=False) if g.series in backlog]
        assert len(open_backlog) == backlog_open - 3, f"cycle {cycle}: the backlog got no share"
        backlog_open -= 3
        assert report.repaired >= 3 + 3  # three recent series and one backlog series
    assert backlog_open == 0
    await r.close()


async def test_a_coalesced_answer_never_proves_the_newest_ended_period_empty(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    # Detection never records a gap reaching the newest ended period; a repair whose clock is
    # behind (here: set back on purpose) must still not prove that period empty from one answer.
    clock = [simulator.market.now_ms()]
    settings = make_settings(
        database_url, simulator.rest_url, bitfinex_symbols=THIN_PAIR, bitfinex_timeframes="1m"
    )
    r = rig(settings, store, clock=lambda: clock[0])
    series = SeriesKey(THIN_PAIR.replace(":", ""), "1m")
    start, end = align(clock[0] - 4 * HOUR_MS, "1h"), align(clock[0] - HOUR_MS, "1m")
    truth = await fill(r.sink, simulator, series.symbol, "1m", start, end)
    gaps = (await r.gaps.detect()).new_gaps
    newest = max(gaps, key=lambda g: g.gap_end)
    assert not [c for c in truth if newest.gap_start <= c.ts < newest.gap_end]  # no trades

    clock[0] = newest.gap_end + 1_000  # the gap's last minute is the newest ended period
    before = candles_requests(simulator)
    report = await r.gaps.repair()
    assert candles_requests(simulator) - before == 1  # one page: every gap in one answer
    assert (report.empty, report.failures) == (len(gaps) - 1, 0)
    assert [g.id for g in await store.list_gaps(repaired=False)] == [newest.id]
    last_minute = newest.gap_end - MINUTE_MS
    assert not [e for e in await store.empty_ranges(series, start, end) if e[1] > last_minute]

    clock[0] += MINUTE_MS  # now a later period has ended: the answer proves the minute empty
    assert (await r.gaps.repair()).empty == 1
    assert await store.count_open_gaps() == 0
    assert (newest.gap_start, newest.gap_end) in await store.empty_ranges(series, start, end)
    await r.close()
