"""`GET /v2/conf/<key>[,<key>...]`: the exchange's configuration lists, one array per key.

Bitfinex answers several comma-separated keys in one request with one array per key, in the
order asked (ccxt's `load_markets` asks for `pub:info:pair,pub:info:pair:futures,
pub:list:pair:securities,pub:list:pair:margin` at once). The shapes follow the recorded answers
in the project's fixtures: `pub:list:pair:exchange` is `[[PAIR, ...]]`, `pub:info:pair` is
`[[[PAIR, [null, null, null, MIN_ORDER, MAX_ORDER, null, ...]], ...]]`. Lists the simulated
market has nothing for (futures, securities, margin, currency maps) are empty, as is a key the
simulator does not know.
"""

from __future__ import annotations

from typing import Any

from market_data.simulator.market import Market
from market_data.simulator.pairs import PairSpec

CONF_PREFIX = "/v2/conf/"
# More keys than any client asks for at once (ccxt: 9) is a malformed request.
MAX_KEYS = 32
# An order is worth at least about this much quote currency, and at most this many times more.
_MIN_ORDER_QUOTE = 5.0
_MAX_ORDER_FACTOR = 2_000_000


class BadConfRequest(ValueError):
    """Too many keys, or an empty one."""


def conf_keys(path: str) -> list[str]:
    """The keys of a `/v2/conf/...` path, in order; BadConfRequest when malformed."""
    keys = path[len(CONF_PREFIX) :].split(",")
    if len(keys) > MAX_KEYS or any(not key for key in keys):
        raise BadConfRequest("conf: invalid")
    return keys


def conf_answer(market: Market, keys: list[str]) -> list[Any]:
    return [_value(market, key) for key in keys]


def _value(market: Market, key: str) -> list[Any]:
    # Only the pairs listed now: one delisted (or not yet listed) is in no list, as on Bitfinex.
    if key == "pub:list:pair:exchange":
        return market.exchange_pairs()
    if key == "pub:info:pair":
        specs = {spec.pair: spec for spec in market.pairs}
        return [[pair, _pair_info(specs[pair])] for pair in market.exchange_pairs()]
    if key == "pub:list:currency":
        return sorted({side for pair in market.exchange_pairs() for side in _sides(pair)})
    return []


def _pair_info(spec: PairSpec) -> list[Any]:
    minimum = float(f"{_MIN_ORDER_QUOTE / spec.price:.2g}")
    info: list[Any] = [None] * 12
    info[3] = _decimal(minimum)
    info[4] = _decimal(minimum * _MAX_ORDER_FACTOR)
    return info


def _decimal(value: float) -> str:
    """Plain decimal text as Bitfinex writes amounts: `0.02`, `4.0`, never `8.3e-05`."""
    text = f"{value:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _sides(pair: str) -> tuple[str, str]:
    base, colon, quote = pair.partition(":")
    return (base, quote) if colon else (pair[:3], pair[3:])
