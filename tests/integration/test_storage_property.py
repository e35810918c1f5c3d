"""Property: any interleaving of upserts and deletes leaves the stored candles equal to a simple
model of the rules (last row wins, a final row is never replaced by a non-final one) and keeps
series_stats equal to what counting the rows says."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_data.models import Candle, SeriesKey
from market_data.storage.sql import open_store
from market_data.storage.tables import candles as candles_table
from market_data.storage.tables import series_stats
from tests.plugins.db import counted_stats, reported_stats

M = 60_000
T0 = 1_699_999_200_000
SYMBOLS = ("AAA", "BBB")

candle_st = st.builds(
    lambda sym, i, price, final: Candle(
        sym, "1m", T0 + i * M, price, price + 1, price - 1, price, 1.0, final
    ),
    st.sampled_from(SYMBOLS),
    st.integers(0, 40),
    st.sampled_from([1.0, 2.0]),
    st.booleans(),
)
upsert_st = st.tuples(st.just("upsert"), st.lists(candle_st, max_size=30))
delete_st = st.tuples(
    st.just("delete"), st.sampled_from(SYMBOLS), st.integers(0, 45), st.integers(1, 5)
)
operations = st.lists(st.one_of(upsert_st, upsert_st, delete_st), max_size=12)

Model = dict[tuple[str, int], Candle]


def apply_upsert(model: Model, batch: list[Candle]) -> None:
    for c in batch:
        old = model.get((c.symbol, c.ts))
        if old is None or c.final or not old.final:
            model[(c.symbol, c.ts)] = c


async def scenario(url: str, threshold: int, ops: list[tuple[object, ...]]) -> None:
    store = open_store(url, bulk_threshold=threshold)
    store.dialect.bulk_chunk_rows = 4  # type: ignore[misc]
    try:
        async with store.engine.begin() as conn:  # each example starts empty
            await conn.execute(candles_table.delete())
            await conn.execute(series_stats.delete())
        model: Model = {}
        for op in ops:
            if op[0] == "upsert":
                batch = list(op[1])  # type: ignore[call-overload]
                await store.upsert_candles(batch)
                apply_upsert(model, batch)
            else:
                _, symbol, index, size = op
                cutoff = T0 + int(index) * M  # type: ignore[call-overload]
                await store.delete_candles_before(SeriesKey(str(symbol), "1m"), cutoff, int(size))  # type: ignore[call-overload]
                model = {k: v for k, v in model.items() if not (k[0] == symbol and k[1] < cutoff)}
        assert await reported_stats(store) == await counted_stats(store)
        stored = []
        for symbol in SYMBOLS:
            stored += await store.candles_in_range(SeriesKey(symbol, "1m"), 0, 2 * T0)
        assert stored == [model[k] for k in sorted(model)]
    finally:
        await store.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, threshold=st.sampled_from([0, 3, 1_000]))
def test_stats_and_rows_follow_the_model(
    database_url: str, ops: list[tuple[object, ...]], threshold: int
) -> None:
    asyncio.run(scenario(database_url, threshold, ops))
