"""Recent first, then deep: against the simulator, every series has its last day stored before
any series gets more, and its last week before any gets deep history; the end result equals the
simulator's truth, as a plain backfill's does. A series whose whole range fits one page (1h over
10 days) comes whole with the first stage: the same one request, so nothing waits for it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from market_data.config import Settings
from market_data.models import Candle, SeriesKey
from market_data.services.sink import CandleSink
from market_data.simulator import Simulator
from market_data.storage.base import Store, UpsertResult
from market_data.timeframes import DAY_MS, align
from tests.integration.test_backfill import (
    assert_matches_truth,
    backfill_service,
    hist_requests,
    make_settings,
)

SYMBOLS = ("BTCUSD", "ETHUSD", "DOGEUSD", "ZRXUSD")
NATIVES = [SeriesKey(s, tf) for s in SYMBOLS for tf in ("1m", "1h")]
STAGED = {k for k in NATIVES if k.timeframe == "1m"}  # more than a page in 10 days


class DepthSink(CandleSink):
    """Records each write's series and oldest candle, and what the store held for every series
    the first time a write reached deeper than the last day, and deeper than the last week."""

    def __init__(self, store: Store, settings: Settings, now: int) -> None:
        super().__init__(store, settings)
        self.now, self.db = now, store
        self.writes: list[tuple[SeriesKey, int]] = []
        self.firsts: dict[str, dict[SeriesKey, int | None]] = {}

    async def write(
        self, candles: Sequence[Candle], source: str, *, derive: bool = True
    ) -> UpsertResult:
        key = SeriesKey(candles[0].symbol, candles[0].timeframe) if candles else None
        if key in STAGED and source == "backfill":
            oldest = min(c.ts for c in candles)
            self.writes.append((key, oldest))
            # A stage boundary lies on a 4h open at most 4 hours before the nominal depth.
            for depth, name in (
                (DAY_MS + 4 * 3_600_000, "week"),
                (7 * DAY_MS + 4 * 3_600_000, "deep"),
            ):
                if oldest < self.now - depth and name not in self.firsts:
                    self.firsts[name] = {k: await self._known_from(k) for k in NATIVES}
        return await super().write(candles, source, derive=derive)

    async def _known_from(self, key: SeriesKey) -> int | None:
        """Where the series' known history starts: its first candle, or earlier when the
        exchange proved the periods before it empty (a thin pair's quiet minutes)."""
        first = await self.db.first_candle(key)
        if first is None:
            return None
        start = first.ts
        for lo, hi in reversed(await self.db.empty_ranges(key, 0, first.ts)):
            if hi < start:
                break
            start = min(start, lo)
        return start


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_every_series_gets_its_last_day_then_week_before_any_deep_history(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, ",".join(SYMBOLS), "1m,4h", backfill_days=10)
    before = simulator.market.now_ms()
    sink = DepthSink(store, settings, before)
    async with backfill_service(settings, store, sink) as service:
        report = await service.run()
        plan = service.plan_state
    assert report.ok, report

    # When the first write reached past the last day, every series held its last day; when
    # the first reached past the last week, every series held its last week.
    assert set(sink.firsts) == {"week", "deep"}
    for name, depth in (("week", DAY_MS), ("deep", 7 * DAY_MS)):
        held = sink.firsts[name]
        late = {k: ts for k, ts in held.items() if ts is None or ts > before - depth}
        assert not late, f"before the {name} stage, these series lacked recent history: {late}"
    # and the writes went day -> week -> deep, never back
    depth_of = [
        0
        if ts >= before - DAY_MS - 4 * 3_600_000
        else 1
        if ts >= before - 7 * DAY_MS - 4 * 3_600_000
        else 2
        for _, ts in sink.writes
    ]
    assert depth_of == sorted(depth_of)
    assert {k for k, _ in sink.writes} == STAGED

    # The result is what a plain backfill gives: complete and equal to the truth.
    for symbol in SYMBOLS:
        for tf in ("1m", "1h", "4h"):
            key = SeriesKey(symbol, tf)
            await assert_matches_truth(
                store, simulator, key, align(before - 10 * DAY_MS, tf), before
            )
    # The plan counted every request, ended done, and its estimate was right within one extra
    # request per series and stage (a window holding an exact multiple of a page).
    assert plan.stage == "done"
    assert plan.requests_left == 0
    assert [s.name for s in plan.stages] == ["day", "week", "deep"]
    assert [s.series for s in plan.stages] == [8, 4, 4]
    assert sum(s.requests_done for s in plan.stages) == report.requests == hist_requests(simulator)
    for st in plan.stages:
        assert st.requests_done <= st.requests <= st.requests_done + st.series


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_rerun_plans_only_the_tail_and_a_short_range_has_fewer_stages(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "BTCUSD,ETHUSD", "1m", backfill_days=3)
    async with backfill_service(settings, store) as service:
        first = await service.preview()
        # Three days of 1m fit one page each: no staging, one request per series.
        assert [(s.name, s.series, s.requests) for s in first.stages] == [("day", 2, 2)]
        assert first.stage == "day"
        assert first.requests_left == 2
        assert (await service.run()).ok
        # Known now: a rerun only has each series' open tail to fetch, in the day stage.
        again = await service.preview()
        assert [(s.name, s.series, s.requests) for s in again.stages] == [("day", 2, 2)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_empty_range_plans_nothing_and_fetches_nothing(
    store: Store, database_url: str, simulator: Simulator
) -> None:
    settings = make_settings(database_url, simulator, "BTCUSD", "1m")
    future = simulator.market.now_ms() + DAY_MS
    async with backfill_service(settings, store) as service:
        report = await service.run(start_ms=future)
        assert service.plan_state.stages == []
        assert service.plan_state.stage == "done"
    assert report.ok
    assert report.requests == hist_requests(simulator) == 0
