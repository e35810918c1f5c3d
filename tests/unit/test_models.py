"""Value types: symbol spelling, the exchange's pair map, candle invariants, contract enums."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from market_data.errors import InvalidCandleError
from market_data.models import (
    Candle,
    JobStatus,
    JobType,
    SeriesKey,
    SymbolError,
    canonical_symbol,
    exchange_pair_map,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bitfinex"
HOUR = 3_600_000
TS = 1_770_321_600_000  # 2026-02-05 20:00:00 UTC


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("BTCUSD", "BTCUSD"),
        ("btcusd", "BTCUSD"),
        ("tBTCUSD", "BTCUSD"),
        ("DOGE:USD", "DOGEUSD"),
        ("doge:usd", "DOGEUSD"),
        ("tDOGE:USD", "DOGEUSD"),
        (" ethusd ", "ETHUSD"),
        ("BTC:CNHT", "BTCCNHT"),
        ("TESTUSD", "TESTUSD"),  # an upper-case T is part of the name, not the prefix
    ],
)
def test_canonical_symbol(text: str, canonical: str) -> None:
    assert canonical_symbol(text) == canonical


@pytest.mark.parametrize(
    "text", ["", "t", "B", "BTC/USD", "BTC-USD", "BTC:USD:EUR", "BTC USD", ":USD", "X" * 41]
)
def test_canonical_symbol_rejects_what_is_not_a_pair(text: str) -> None:
    with pytest.raises(SymbolError):
        canonical_symbol(text)


def test_exchange_pair_map_from_the_recorded_pair_list() -> None:
    payload = json.loads(
        (FIXTURES / "rest_conf_pub_list_pair_exchange_2021-04-17_cryptofeed.json").read_text()
    )
    pairs = payload[0]
    mapping = exchange_pair_map(pairs)
    assert mapping["BTCUSD"] == "BTCUSD"
    assert mapping["AAVEUSD"] == "AAVE:USD"
    assert mapping["BTCCNHT"] == "BTC:CNHT"
    assert len(mapping) == len(pairs)  # no two exchange pairs share a canonical spelling
    assert set(mapping.values()) == set(pairs)


def test_exchange_pair_map_skips_garbage() -> None:
    assert exchange_pair_map(["DOGE:USD", "not a pair", "", "ETHUSD"]) == {
        "DOGEUSD": "DOGE:USD",
        "ETHUSD": "ETHUSD",
    }


def candle(**changes: object) -> Candle:
    base = Candle("BTCUSD", "1h", TS, 100.0, 110.0, 90.0, 105.0, 3.5)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_sound_candle_has_no_problem() -> None:
    sound = candle()
    assert sound.problem() is None
    assert sound.validate() is sound
    assert sound.series == SeriesKey("BTCUSD", "1h")
    assert str(sound.series) == "BTCUSD/1h"
    assert candle(volume=0.0, high=90.0).problem() is None  # no trades: flat, zero volume
    assert candle(ts=TS - 4 * HOUR, timeframe="4h").problem() is None
    assert candle(final=False).problem() is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"high": 80.0}, "below low"),
        ({"volume": -1.0}, "negative"),
        ({"open": math.nan}, "finite"),
        ({"close": math.inf}, "finite"),
        ({"volume": "3"}, "not numbers"),
        ({"high": True}, "not numbers"),
        ({"ts": TS + 1}, "not aligned"),
        ({"ts": TS + HOUR, "timeframe": "4h"}, "not aligned"),
        ({"ts": -HOUR}, "non-negative"),
        ({"ts": float(TS)}, "integer"),
    ],
)
def test_candle_problems(changes: dict[str, object], fragment: str) -> None:
    bad = candle(**changes)
    problem = bad.problem()
    assert problem is not None
    assert fragment in problem
    with pytest.raises(InvalidCandleError, match="BTCUSD/"):
        bad.validate()


def test_same_values_ignores_finality_and_compares_numbers() -> None:
    assert candle().same_values(candle(final=False))
    assert not candle().same_values(candle(close=106.0))


def test_job_enums_match_the_contract() -> None:
    assert {t.value for t in JobType} == {
        "backfill",
        "gap_detection",
        "gap_repair",
        "update",
        "cleanup",
        "ws_catchup",
    }
    assert {s.value for s in JobStatus} == {"running", "success", "failed", "cancelled"}
