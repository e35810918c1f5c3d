"""Gap detection and repair against the simulator (real sockets) on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest

from market_data.models import SeriesKey
from market_data.services import derived
from market_data.simulator import NEW_PAIR, THIN_PAIR, Simulator
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, align, format_log_ts
from tests.integration.gap_support import (
    candles_requests,
    fill,
    make_settings,
    messages,
    punch,
    rig,
    values,
)

BTC1H, BTC4H = SeriesKey("BTCUSD", "1h"), SeriesKey("BTCUSD", "4h")
ETH1H, ETH4H = SeriesKey("ETHUSD", "1h"), SeriesKey("ETHUSD", "4h")
SOL1H = SeriesKey("SOLUSD", "1h")


def span(start: int, end: int) -> str:
    return f"from {format_log_ts(start)} to {format_log_ts(end)}"


async def test_punched_holes_are_detected_exactly_and_repaired_to_the_truth(
    store: SqlStore, database_url: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="market_data.services")
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols="BTCUSD,ETHUSD",
        bitfinex_timeframes="1h,4h",
    )
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 3 * DAY_MS, "1d"), align(now, "1h")
    truth = {s: await fill(r.sink, simulator, s.symbol, "1h", start, end) for s in (BTC1H, ETH1H)}
    h = lambda n: start + n * HOUR_MS  # noqa: E731

    # BTC: three hours (the seed's example), and a whole 4h period with its derived candle;
    # ETH: one hour, and one derived candle whose source is complete.
    assert await punch(store, BTC1H, h(20), h(23)) == 3
    assert await punch(store, BTC1H, h(28), h(32)) == 4
    assert await punch(store, BTC4H, h(28), h(32)) == 1
    assert await punch(store, ETH1H, h(40), h(41)) == 1
    assert await punch(store, ETH4H, h(8), h(12)) == 1

    detection = await r.gaps.detect()
    found = {(g.symbol, g.timeframe, g.gap_start, g.gap_end) for g in detection.new_gaps}
    assert found == {
        ("BTCUSD", "1h", h(20), h(23)),
        ("BTCUSD", "1h", h(28), h(32)),
        ("BTCUSD", "4h", h(28), h(32)),
        ("ETHUSD", "1h", h(40), h(41)),
        ("ETHUSD", "4h", h(8), h(12)),
    }
    assert detection.open_gaps == 5
    assert (await r.gaps.detect()).new_gaps == []  # recorded once

    report = await r.gaps.repair()
    assert (report.repaired, report.empty, report.failures, report.open_gaps) == (5, 0, 0, 0)
    for series, rows in truth.items():
        assert values(await store.candles_in_range(series, start, end)) == values(rows)
    for series in (BTC4H, ETH4H):
        expected = [
            c
            for c in derived.aggregate(truth[SeriesKey(series.symbol, "1h")], "4h", now_ms=now)
            if c.final
        ]
        stored = await store.candles_in_range(series, start, expected[-1].ts + 1)
        assert values(stored) == values(expected)
    # The derived gap whose source was complete was recomputed without asking the exchange.
    assert not [c for c in r.rest.calls if c.pair == "ETHUSD" and c.start_ms == h(8)]

    log = messages(caplog.records)
    assert "Running gap detection and repair..." in log
    assert f"Gap detected: BTCUSD/1h {span(h(20), h(23))}" in log
    assert f"Repairing gap: BTCUSD/1h {span(h(20), h(23))}" in log
    assert "Repaired gap with 3 candles" in log
    assert "Gap maintenance complete: 5 new gaps, 5 repaired, 0 failures, open_gaps=0" in log
    assert log.index(f"Gap detected: BTCUSD/1h {span(h(20), h(23))}") < log.index(
        "Repaired gap with 3 candles"
    )

    closed = await store.list_gaps(repaired=True)
    assert {g.status for g in closed} == {"repaired"}
    assert {(g.gap_start, g.candles_repaired) for g in closed if g.series == BTC1H} == {
        (h(20), 3),
        (h(28), 4),
    }
    assert (await r.gaps.detect()).new_gaps == []
    jobs = {j.job_type: j for j in await store.list_jobs(limit=10)}
    assert jobs["gap_detection"].status == "success"
    assert jobs["gap_repair"].status == "success"
    assert jobs["gap_repair"].candles_fetched == report.candles
    await r.close()


async def test_thin_pair_empty_minutes_close_as_empty_and_stay_closed(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(
        database_url, simulator.rest_url, bitfinex_symbols=THIN_PAIR, bitfinex_timeframes="1m"
    )
    r = rig(settings, store)
    series = SeriesKey(THIN_PAIR.replace(":", ""), "1m")
    now = simulator.market.now_ms()
    start, end = align(now - 6 * HOUR_MS, "1h"), align(now, "1m")
    truth = await fill(r.sink, simulator, series.symbol, "1m", start, end)
    assert len(truth) < (truth[-1].ts - truth[0].ts) // MINUTE_MS / 2  # mostly empty minutes

    detection = await r.gaps.detect()
    assert len(detection.new_gaps) > 20
    before = candles_requests(simulator)
    report = await r.gaps.repair()
    assert report.empty == len(detection.new_gaps)
    assert report.repaired == 0
    assert report.open_gaps == 0
    # Neighbouring gaps share requests: a few, not one per gap.
    assert 0 < candles_requests(simulator) - before <= 3
    assert values(await store.candles_in_range(series, start, end)) == values(truth)

    settled = candles_requests(simulator)
    for _ in range(2):
        assert (await r.gaps.detect()).new_gaps == []
        assert (await r.gaps.detect(full=True)).new_gaps == []
        again = await r.gaps.repair()
        assert again.attempted == 0
    assert candles_requests(simulator) == settled
    assert {g.status for g in await store.list_gaps(limit=1000)} == {"empty"}
    await r.close()


async def test_a_stretch_without_any_trades_is_closed_once_not_retried(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    # Before its listing the pair traded nothing: the exchange answers [] for the whole range.
    settings = make_settings(database_url, simulator.rest_url, bitfinex_symbols=NEW_PAIR)
    r = rig(settings, store)
    series = SeriesKey(NEW_PAIR, "1h")
    listing = simulator.market.listing_ms(NEW_PAIR)
    first, last = listing - 10 * DAY_MS, listing - 2 * DAY_MS
    fake = await fill(r.sink, simulator, "BTCUSD", "1h", first, first + HOUR_MS)
    fake += await fill(r.sink, simulator, "BTCUSD", "1h", last, last + HOUR_MS)
    await r.sink.write(
        [c.__class__(NEW_PAIR, "1h", c.ts, c.open, c.high, c.low, c.close, c.volume) for c in fake],
        "backfill",
    )

    gaps = (await r.gaps.detect()).new_gaps
    assert [(g.gap_start, g.gap_end) for g in gaps] == [(first + HOUR_MS, last)]
    report = await r.gaps.repair()
    assert (report.empty, report.repaired, report.failures) == (1, 0, 0)
    assert [g.status for g in await store.list_gaps(symbol=NEW_PAIR)] == ["empty"]
    assert await store.empty_ranges(series, first, last) == [(first + HOUR_MS, last)]

    requests = candles_requests(simulator)
    for _ in range(3):
        assert (await r.gaps.detect(full=True)).new_gaps == []
        assert (await r.gaps.repair()).attempted == 0
    assert candles_requests(simulator) == requests
    await r.close()


async def test_recent_gaps_are_fetched_urgently_first_and_the_oldest_get_their_share(
    store: SqlStore, database_url: str, simulator: Simulator
) -> None:
    # GAP_REPAIR_MAX_REPAIRS_PER_RUN counts requests; each series here takes its own request.
    settings = make_settings(
        database_url,
        simulator.rest_url,
        bitfinex_symbols="BTCUSD,ETHUSD,SOLUSD",
        gap_repair_max_repairs_per_run=2,
    )
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 4 * DAY_MS, "1d"), align(now, "1h")
    for symbol in ("BTCUSD", "ETHUSD", "SOLUSD"):
        await fill(r.sink, simulator, symbol, "1h", start, end)
    recent, older, oldest = end - 5 * HOUR_MS, start + 30 * HOUR_MS, start + 3 * HOUR_MS
    for series, ts in ((BTC1H, recent), (BTC1H, older), (ETH1H, older), (SOL1H, oldest)):
        await punch(store, series, ts, ts + HOUR_MS)
    assert len((await r.gaps.detect()).new_gaps) == 4

    first = await r.gaps.repair()  # two requests: the most recent gap, and the oldest one
    assert (first.requests, first.repaired, first.open_gaps) == (2, 3, 1)
    assert [(g.symbol, g.gap_start) for g in await store.list_gaps(repaired=False)] == [
        ("ETHUSD", older)
    ]
    # The recent gap's request is urgent, and BTC's older gap in the same page rides along.
    by_pair = {c.pair: (c.start_ms, c.priority.name) for c in r.rest.calls}
    assert by_pair == {"BTCUSD": (older, "URGENT"), "SOLUSD": (oldest, "NORMAL")}
    assert (await r.gaps.repair(max_repairs=5)).repaired == 1
    assert r.rest.calls[-1].priority.name == "NORMAL"
    assert await store.count_open_gaps() == 0
    await r.close()


async def test_detection_is_skipped_while_too_many_gaps_are_open(
    store: SqlStore, database_url: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="market_data.services")
    settings = make_settings(database_url, simulator.rest_url, gap_detection_max_open_gaps=2)
    r = rig(settings, store)
    now = simulator.market.now_ms()
    start, end = align(now - 2 * DAY_MS, "1d"), align(now, "1h")
    await fill(r.sink, simulator, "BTCUSD", "1h", start, end)
    for n in (3, 9, 15):
        await punch(store, BTC1H, start + n * HOUR_MS, start + (n + 1) * HOUR_MS)
    assert len((await r.gaps.detect()).new_gaps) == 3  # none open yet: detection runs

    await punch(store, BTC1H, start + 20 * HOUR_MS, start + 21 * HOUR_MS)
    skipped = await r.gaps.detect(full=True)
    assert skipped.new_gaps == []
    assert skipped.skipped_reason
    assert (
        "Gap detection skipped: 3 open gaps exceed GAP_DETECTION_MAX_OPEN_GAPS=2; "
        "repairs first" in messages(caplog.records)
    )
    job = (await store.list_jobs(job_type="gap_detection", limit=1))[0]
    assert job.status == "cancelled"
    assert "GAP_DETECTION_MAX_OPEN_GAPS" in (job.last_error or "")

    await r.gaps.repair(max_repairs=2)  # no open gap left: under the limit again
    assert [(g.gap_start, g.gap_end) for g in (await r.gaps.detect(full=True)).new_gaps] == [
        (start + 20 * HOUR_MS, start + 21 * HOUR_MS)
    ]
    await r.close()
