"""BITFINEX_SYMBOLS with `all` and glob patterns (symbols.py, config.py) and the series universe
they resolve to (services/universe.py)."""

from __future__ import annotations

import pytest

from market_data.config import load_settings
from market_data.errors import ConfigError
from market_data.models import SeriesKey
from market_data.services.universe import SeriesUniverse, UniverseChange
from market_data.symbols import (
    SymbolSpec,
    SymbolSpecError,
    matching_symbols,
    parse_spec,
    pattern_matches,
    wanted,
)

PAIRS = [
    "BTCUSD",
    "ETHUSD",
    "DOGE:USD",
    "BTCUST",
    "TESTBTC:TESTUSD",
    "TESTBTC:TESTUSDT",
    "XAUT:BTC",
]


def settings(symbols: str, timeframes: str = "1h,4h"):
    return load_settings(env_file=None, bitfinex_symbols=symbols, bitfinex_timeframes=timeframes)


def test_names_keep_working_exactly_as_before() -> None:
    s = settings("btcusd, tDOGE:USD,ETHUSD,BTCUSD")
    assert s.bitfinex_symbols == ["BTCUSD", "DOGEUSD", "ETHUSD"]
    assert s.symbol_patterns == ()
    assert not s.has_symbol_patterns
    assert s.native_series()[0] == SeriesKey("BTCUSD", "1h")


def test_all_and_patterns_are_split_from_names() -> None:
    s = settings("BTCUSD, all, *:usd, btc?st")
    assert s.bitfinex_symbols == ["BTCUSD"]
    assert s.symbol_patterns == ("*", "*:USD", "BTC?ST")
    assert s.has_symbol_patterns
    assert s.masked_dict()["BITFINEX_SYMBOLS"] == ["BTCUSD", "*", "*:USD", "BTC?ST"]
    assert settings("ALL").bitfinex_symbols == []


@pytest.mark.parametrize("bad", ["BT$*", "*USD/EUR", "[A-Z]*", "*" * 41, "bit coin*", "B-T*"])
def test_invalid_patterns_are_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(bad)
    assert "BITFINEX_SYMBOLS" in str(caught.value)
    assert "not a valid pattern" in str(caught.value)


def test_an_invalid_name_still_says_what_is_expected() -> None:
    with pytest.raises(SymbolSpecError, match="all` or a pattern like"):
        parse_spec(["B"])
    with pytest.raises(ConfigError, match="BITFINEX_SYMBOLS"):
        settings("BTCUSD,$$")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["BTCUSD", "ETHUSD", "DOGEUSD", "BTCUST", "XAUTBTC"]),
        ("*USD", ["BTCUSD", "ETHUSD", "DOGEUSD"]),  # canonical spelling: DOGEUSD
        ("*:USD", ["DOGEUSD"]),  # exchange spelling only: DOGE:USD
        ("BTC*", ["BTCUSD", "BTCUST"]),
        ("???USD", ["BTCUSD", "ETHUSD"]),
        ("TEST*", []),  # test pairs are never picked by a pattern
        ("*TESTUSD", []),
    ],
)
def test_patterns_match_both_spellings_and_never_test_pairs(
    pattern: str, expected: list[str]
) -> None:
    assert matching_symbols([pattern], PAIRS) == expected


def test_matching_is_in_list_order_without_duplicates() -> None:
    assert matching_symbols(["*USD", "DOGE*", "ETH*"], PAIRS) == ["BTCUSD", "ETHUSD", "DOGEUSD"]
    assert not pattern_matches("*", "tTESTBTC:TESTUSD")


def test_wanted_tells_a_stored_symbol_the_configuration_asks_for() -> None:
    spec = SymbolSpec(("LTCBTC",), ("*:USD",))
    assert wanted(spec, "LTCBTC")
    assert wanted(spec, "DOGEUSD")  # stored without its colon: `*:USD` is tried as `*USD`
    assert not wanted(spec, "BTCEUR")
    assert not wanted(spec, "TESTBTCTESTUSD")


def test_a_static_universe_is_the_settings_series() -> None:
    s = settings("BTCUSD,ETHUSD")
    universe = SeriesUniverse(s)
    assert not universe.dynamic
    assert universe.native_series() == s.native_series()
    assert universe.derived_series() == s.derived_series()
    assert universe.all_series() == s.all_series()
    assert universe.state_of("BTCUSD") == "active"
    assert universe.note_stored(["DOGEUSD"]) == []  # no patterns: nothing is ever delisted


def test_refresh_adds_and_delists_and_tells_listeners() -> None:
    universe = SeriesUniverse(settings("LTCBTC,*:USD,BTC*"))
    heard: list[UniverseChange] = []
    universe.on_change(heard.append)
    assert universe.symbols == ("LTCBTC",)  # before the pair list is read: the names only

    first = universe.refresh(PAIRS)
    assert first.added == ("BTCUSD", "DOGEUSD", "BTCUST")  # in the exchange's list order
    assert universe.symbols == ("LTCBTC", "BTCUSD", "DOGEUSD", "BTCUST")
    assert SeriesKey("DOGEUSD", "4h") in universe.derived_series()
    assert SeriesKey("DOGEUSD", "4h") in universe.known_derived()

    second = universe.refresh([p for p in PAIRS if p != "DOGE:USD"] + ["PEPE:USD"])
    assert second == UniverseChange(added=("PEPEUSD",), removed=("DOGEUSD",))
    assert universe.state_of("DOGEUSD") == "delisted"
    assert not universe.is_active("DOGEUSD")
    assert SeriesKey("DOGEUSD", "1h") not in universe.native_series()
    assert SeriesKey("DOGEUSD", "1h") in universe.delisted_series()
    assert SeriesKey("DOGEUSD", "4h") in universe.known_derived()  # its data is still served
    assert universe.state_of("LTCBTC") == "active"  # a name stays, listed or not

    assert not universe.refresh([p for p in PAIRS if p != "DOGE:USD"] + ["PEPE:USD"])
    relisted = universe.refresh([*PAIRS, "PEPE:USD"])
    assert relisted.added == ("DOGEUSD",)
    assert universe.state_of("DOGEUSD") == "active"
    assert heard == [first, second, relisted]


def test_stored_series_no_longer_listed_are_delisted_after_a_restart() -> None:
    universe = SeriesUniverse(settings("*USD"))
    assert universe.note_stored(["OLDUSD"]) == []  # the pair list is not read yet
    universe.refresh(PAIRS)
    assert universe.note_stored(["OLDUSD", "BTCUSD", "OLDEUR", "TESTBTCTESTUSD", "x"]) == ["OLDUSD"]
    assert universe.delisted_symbols == ("OLDUSD",)
    assert universe.state_of("OLDUSD") == "delisted"
