"""Bitfinex's pair list: parsing `/v2/conf/pub:list:pair:exchange` and finding a symbol's pair id
(`DOGEUSD` -> `DOGE:USD`). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from market_data.errors import PayloadError, UnknownSymbol
from market_data.exchanges.bitfinex.wire import (
    MAX_PAIRS,
    _dumps,
    _loads,
    classify_http_error,
    is_error_body,
)
from market_data.models import SymbolError, canonical_symbol, exchange_pair_map


def parse_pair_list(body: bytes | str | object) -> list[str]:
    """`[["BTCUSD","DOGE:USD",...]]` (also the `pub:info:pair` shape `[[["BTCUSD",[...]],...]]`)."""
    obj = _loads(body)
    if is_error_body(obj):
        raise classify_http_error(200, obj)
    if not isinstance(obj, list) or len(obj) != 1 or not isinstance(obj[0], list):
        raise PayloadError(f"pair list is not [[...]]: {_dumps(obj)}")
    if len(obj[0]) > MAX_PAIRS:
        raise PayloadError(f"pair list has {len(obj[0])} entries, more than {MAX_PAIRS}")
    pairs: list[str] = []
    for item in obj[0]:
        if isinstance(item, list) and item:
            item = item[0]
        if not isinstance(item, str) or not 1 <= len(item) <= 40:
            raise PayloadError(f"pair list entry is not a pair id: {_dumps(item)}")
        pairs.append(item)
    return pairs


def pair_for_symbol(symbol: str, pairs: Iterable[str] | Mapping[str, str]) -> str:
    """The exchange's pair id for a symbol (`DOGEUSD` -> `DOGE:USD`), or UnknownSymbol.

    `pairs` is the exchange's pair list, or the map `exchange_pair_map` built from it.
    """
    try:
        canonical = canonical_symbol(symbol)
    except SymbolError:
        raise UnknownSymbol(f"{symbol!r} is not a trading pair") from None
    mapping = pairs if isinstance(pairs, Mapping) else exchange_pair_map(pairs)
    try:
        return mapping[canonical]
    except KeyError:
        raise UnknownSymbol(f"Bitfinex does not list {canonical}") from None
