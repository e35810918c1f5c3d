"""BITFINEX_SYMBOLS as users write it: explicit names (`BTCUSD`, `DOGE:USD`), the word `all`,
and glob patterns (`*USD`, `*:USD`, `BTC*`, fnmatch-style `*` and `?`), mixed freely.

A pattern is matched against both spellings of a pair, the canonical one (`DOGEUSD`) and the
exchange's (`DOGE:USD`), so `*:USD` picks the colon pairs and `*USD` every USD pair. Patterns
never pick test pairs (`TESTBTC:TESTUSD`): those are the exchange's own fixtures, not markets.
An explicit name is taken as written, test pair or not. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from market_data.models import SeriesKey, SymbolError, canonical_symbol
from market_data.timeframes import is_native, source_of

ALL = "*"  # what `all` means
MAX_PATTERNS = 50  # patterns are few by nature; a long list is a mistake
_PATTERN_CHARS = re.compile(r"^[A-Z0-9:*?]{1,40}$")
TEST_PREFIX = "TEST"


class SymbolSpecError(ValueError):
    """An item of BITFINEX_SYMBOLS is neither a pair name nor a valid pattern."""


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Explicit canonical names (in order) and patterns (upper case, `all` as `*`)."""

    names: tuple[str, ...]
    patterns: tuple[str, ...]


def is_pattern(item: str) -> bool:
    text = item.strip()
    return text.lower() == "all" or "*" in text or "?" in text


def parse_item(item: str) -> tuple[str, bool]:
    """One item -> (canonical name or pattern, is_pattern). Raises SymbolSpecError."""
    text = item.strip()
    if text.lower() == "all":
        return ALL, True
    if is_pattern(text):
        pattern = text.upper()
        if not _PATTERN_CHARS.match(pattern):
            raise SymbolSpecError(
                f"{text[:40]!r} is not a valid pattern: only letters, digits, ':', '*' and '?'"
                " (e.g. *USD, BTC*, *:USD)"
            )
        return pattern, True
    try:
        return canonical_symbol(text), False
    except SymbolError:
        raise SymbolSpecError(
            f"{text[:40]!r} is not a trading pair like BTCUSD, `all` or a pattern like *USD"
        ) from None


def parse_spec(items: Iterable[str]) -> SymbolSpec:
    names: list[str] = []
    patterns: list[str] = []
    for item in items:
        value, pattern = parse_item(item)
        (patterns if pattern else names).append(value)
    patterns = list(dict.fromkeys(patterns))
    if len(patterns) > MAX_PATTERNS:
        raise SymbolSpecError(f"lists {len(patterns)} patterns; at most {MAX_PATTERNS}")
    return SymbolSpec(tuple(dict.fromkeys(names)), tuple(patterns))


def is_test_pair(pair: str) -> bool:
    """The exchange's test pairs (`TESTBTC:TESTUSD`), never picked by a pattern."""
    text = pair.strip()
    if text[:1] == "t" and text[1:2].isupper():  # the `t` prefix of a trading pair id
        text = text[1:]
    return text.upper().startswith(TEST_PREFIX)


def pattern_matches(pattern: str, pair: str) -> bool:
    """Whether `pattern` matches a pair id in either spelling (`DOGE:USD` or `DOGEUSD`)."""
    if is_test_pair(pair):
        return False
    try:
        canonical = canonical_symbol(pair)
    except SymbolError:
        return False
    exchange = pair.strip().upper()
    return fnmatchcase(canonical, pattern) or fnmatchcase(exchange, pattern)


def matching_symbols(patterns: Sequence[str], pairs: Iterable[str]) -> list[str]:
    """Canonical symbols of the listed `pairs` matched by any pattern, in list order."""
    found: dict[str, None] = {}
    for pair in pairs:
        if any(pattern_matches(p, pair) for p in patterns):
            found[canonical_symbol(pair)] = None
    return list(found)


def wanted(spec: SymbolSpec, symbol: str) -> bool:
    """Whether a stored canonical symbol is one the configuration asks for (a name or a
    pattern's match); used to tell a delisted series from one no longer configured."""
    if symbol in spec.names:
        return True
    # A stored symbol has lost its exchange spelling: `*:USD` is tried as `*USD` (a superset).
    return any(
        pattern_matches(p, symbol) or pattern_matches(p.replace(":", ""), symbol)
        for p in spec.patterns
    )


def native_series(symbols: Iterable[str], timeframes: Sequence[str]) -> list[SeriesKey]:
    """Series fetched from the exchange: the configured native ones and the sources of derived
    ones (4h -> 1h), without duplicates, symbol by symbol in the given order."""
    series = (SeriesKey(symbol, source_of(tf)) for symbol in symbols for tf in timeframes)
    return list(dict.fromkeys(series))


def derived_series(symbols: Iterable[str], timeframes: Sequence[str]) -> list[SeriesKey]:
    """Series aggregated locally (timeframes Bitfinex does not serve, e.g. 4h)."""
    return [SeriesKey(symbol, tf) for symbol in symbols for tf in timeframes if not is_native(tf)]
