"""The README's recipes for getting data out, run as written: pandas and DuckDB on a Parquet
export, plain SQL on PostgreSQL. Each recipe is the fenced block after `<!-- recipe: NAME -->`."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from market_data.export.exporter import export_targets
from market_data.export.files import Target
from market_data.export.options import Format
from market_data.models import Candle, SeriesKey
from market_data.storage.sql import SqlStore
from market_data.timeframes import HOUR_MS, align

README = Path(__file__).resolve().parents[2] / "README.md"
T0 = align(1_767_225_600_000, "1d") - 2 * 24 * HOUR_MS  # 2025-12-30: before the SQL's range
BTC_1H = SeriesKey("BTCUSD", "1h")
HOURS = 24 * 36  # into February: after it too


def recipe(name: str) -> str:
    found = re.search(rf"<!-- recipe: {name} -->\n```\w+\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no recipe {name!r}"
    return found.group(1)


def _candles() -> list[Candle]:
    return [
        Candle(
            "BTCUSD",
            "1h",
            T0 + i * HOUR_MS,
            100.0 + i % 17,
            120.0 + i % 7 + i / 1000,
            90.0 - i % 13 - i / 1000,
            100.5 + i % 11,
            1.0 + i % 5,
        )
        for i in range(HOURS)
    ]


def _daily(rows: list[Candle]) -> dict[date, tuple[float, float, float]]:
    days: dict[date, list[Candle]] = defaultdict(list)
    for c in rows:
        days[datetime.fromtimestamp(c.ts / 1000, UTC).date()].append(c)
    return {
        d: (min(c.low for c in cs), max(c.high for c in cs), sum(c.volume for c in cs))
        for d, cs in days.items()
    }


async def _export(store: SqlStore, folder: Path) -> None:
    await store.upsert_candles(_candles())
    target = Target(str(folder / "btc-1h.parquet"), (BTC_1H,))
    await export_targets(store, [target], 0, 2**62, Format.parquet)


async def test_pandas_and_duckdb_on_the_parquet_export(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _export(store, tmp_path)
    monkeypatch.chdir(tmp_path)
    rows = _candles()

    pytest.importorskip("pandas")
    scope: dict[str, object] = {}
    exec(compile(recipe("pandas"), "README pandas recipe", "exec"), scope)
    daily = scope["daily"]
    last_close: dict[date, float] = {}
    for c in rows:
        last_close[datetime.fromtimestamp(c.ts / 1000, UTC).date()] = c.close
    assert {ts.date(): v for ts, v in daily.items()} == last_close  # type: ignore[attr-defined]
    assert str(daily.index.tz) == "UTC"  # type: ignore[attr-defined]

    duckdb = pytest.importorskip("duckdb")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        got = con.execute(recipe("duckdb")).fetchall()
    expected = _daily(rows)
    assert [(s, d.date()) for s, d, *_ in got] == [("BTCUSD", d) for d in sorted(expected)]
    for _, day, low, high, volume in got:
        assert (low, high) == expected[day.date()][:2]
        assert volume == pytest.approx(expected[day.date()][2])


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_plain_sql_on_postgresql(store: SqlStore) -> None:
    await store.upsert_candles(_candles())
    conn = await asyncpg.connect(store.url.replace("+asyncpg", ""))
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        got = await conn.fetch(recipe("postgres"))
    finally:
        await conn.close()
    january = {d: v for d, v in _daily(_candles()).items() if d.year == 2026 and d.month == 1}
    assert [r["day"].date() for r in got] == sorted(january)
    for r in got:
        low, high, volume = january[r["day"].date()]
        assert (r["low"], r["high"]) == (low, high)
        assert r["volume"] == pytest.approx(volume)
