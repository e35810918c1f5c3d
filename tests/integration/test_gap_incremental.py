"""Detection is incremental: each cycle looks at what changed since the last one (new candles at
the tail, older history backfilled at the head), survives a restart, and ignores the still-open
period and anything older than retention. No exchange is needed: nothing is repaired here."""

from __future__ import annotations

from market_data.models import Candle, SeriesKey
from market_data.services.gap_repair import GapService
from market_data.storage.sql import SqlStore
from market_data.timeframes import DAY_MS, HOUR_MS
from tests.integration.gap_support import make_settings, punch, rig

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S = SeriesKey("BTCUSD", "1h")


def hours(first: int, last: int, *, skip: tuple[int, ...] = (), final: bool = True) -> list[Candle]:
    return [
        Candle("BTCUSD", "1h", T0 + i * HOUR_MS, 100, 101, 99, 100.5, 1, final)
        for i in range(first, last)
        if i not in skip
    ]


def ranges(gaps: list[object]) -> list[tuple[int, int]]:
    return [
        ((g.gap_start - T0) // HOUR_MS, (g.gap_end - T0) // HOUR_MS)  # type: ignore[attr-defined]
        for g in gaps
    ]


async def test_cycles_look_only_at_what_changed(store: SqlStore, database_url: str) -> None:
    clock = [T0 + 50 * HOUR_MS]
    settings = make_settings(database_url, "http://127.0.0.1:9")  # never asked
    r = rig(settings, store, clock=lambda: clock[0])
    # The candle of hour 49 is still open at "now": it bounds nothing yet.
    await store.upsert_candles(hours(0, 49, skip=(10, 11)) + hours(49, 50, final=False))
    assert ranges((await r.gaps.detect()).new_gaps) == [(10, 12)]
    assert (await store.scan_states())[S][1] == T0 + 48 * HOUR_MS  # the watermark

    # New candles at the tail, one missing: only the new hole is found.
    clock[0] = T0 + 60 * HOUR_MS
    await store.upsert_candles(hours(49, 60, skip=(55,)))
    assert ranges((await r.gaps.detect()).new_gaps) == [(55, 56)]

    # Older history backfilled in front of the first candle, with a hole: the head is scanned.
    await store.upsert_candles(hours(-20, 0, skip=(-7,)))
    assert ranges((await r.gaps.detect()).new_gaps) == [(-7, -6)]

    # Rows deleted behind the watermark are not looked at again by a cycle...
    await punch(store, S, T0 + 30 * HOUR_MS, T0 + 31 * HOUR_MS)
    assert (await r.gaps.detect()).new_gaps == []
    # ...nor after a restart (the checked range is stored), but a full scan finds them.
    restarted = rig(settings, store, clock=lambda: clock[0])
    assert (await restarted.gaps.detect()).new_gaps == []
    assert ranges((await restarted.gaps.detect(full=True)).new_gaps) == [(30, 31)]
    assert (await store.scan_states())[S][0] == T0 - 20 * HOUR_MS  # detect_low
    await r.close()
    await restarted.close()


async def test_nothing_older_than_retention_is_reported(store: SqlStore, database_url: str) -> None:
    clock = [T0 + 10 * DAY_MS]
    settings = make_settings(database_url, "http://127.0.0.1:9", retention_days={"1h": 5})
    r = rig(settings, store, clock=lambda: clock[0])
    cut = 5 * 24  # hour index of the retention cut-off
    await store.upsert_candles(hours(0, 10 * 24, skip=(20, 21, cut + 3)))
    assert ranges((await r.gaps.detect()).new_gaps) == [(cut + 3, cut + 4)]

    # A recorded retention horizon later than the cut-off is honoured as well.
    await store.set_retention_horizon(S, T0 + (cut + 10) * HOUR_MS)
    await punch(store, S, T0 + (cut + 5) * HOUR_MS, T0 + (cut + 6) * HOUR_MS)
    fresh = rig(settings, store, clock=lambda: clock[0])
    assert (await fresh.gaps.detect(full=True)).new_gaps == []
    await r.close()
    await fresh.close()


async def test_detection_stops_before_periods_still_to_confirm(
    store: SqlStore, database_url: str
) -> None:
    """The live stream's pending periods are not gaps yet, and the watermark stays behind them
    at a stored candle, so a hole reaching across them is found whole once they are
    confirmed (less what the confirmation proved empty)."""
    clock = [T0 + 40 * HOUR_MS]
    unconfirmed: dict[SeriesKey, int] = {}
    settings = make_settings(database_url, "http://127.0.0.1:9")  # never asked
    r = rig(settings, store, clock=lambda: clock[0])
    gaps = GapService(
        settings, store, r.exchange, r.sink, clock=lambda: clock[0],
        unconfirmed=lambda: unconfirmed,
    )  # fmt: skip
    # Holes at 5, 20..25 and 32; hours from 22 on are still to confirm.
    await store.upsert_candles(hours(0, 40, skip=(5, 20, 21, 22, 23, 24, 25, 32)))
    unconfirmed[S] = T0 + 22 * HOUR_MS
    assert ranges((await gaps.detect()).new_gaps) == [(5, 6)]
    assert (await store.scan_states())[S][1] == T0 + 19 * HOUR_MS  # the candle before 20..25
    # Confirmed up to 30: hours 22..25 were proven empty; 20..21 stayed a real hole.
    await store.add_empty_ranges(S, [(T0 + 22 * HOUR_MS, T0 + 26 * HOUR_MS)])
    unconfirmed[S] = T0 + 30 * HOUR_MS
    assert ranges((await gaps.detect()).new_gaps) == [(20, 22)]
    assert (await store.scan_states())[S][1] == T0 + 29 * HOUR_MS
    # Nothing pending any more (the stream stopped): detection goes on as before.
    unconfirmed.clear()
    assert ranges((await gaps.detect()).new_gaps) == [(32, 33)]
    assert (await store.scan_states())[S][1] == T0 + 39 * HOUR_MS
    await r.close()
