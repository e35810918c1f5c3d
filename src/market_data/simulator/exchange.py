"""An exchange-shaped market: hundreds of pairs with Bitfinex's long tail, drawn from a seed.

The real pair list (fixtures `rest_conf_pub_info_pair_2025-08-10`) has about 300 pairs: about 43%
spelled with a colon because one side is longer than three letters (`DOGE:USD`), about 5% test
pairs (`TESTBTC:TESTUSD`), quotes mostly USD and UST. A handful trade every minute; most trade in
few minutes (bitfinex-api.md §6, "Illiquid pairs"). Here activity falls with a pair's rank as a
power law, listing dates are spread over the history, and the best-known real ids take the top
ranks so the daemon's default symbols exist. Everything is a pure function of the seed.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TypeVar

from market_data.models import canonical_symbol
from market_data.simulator.pairs import PairSpec
from market_data.simulator.prices import hash64

DEFAULT_EXCHANGE_PAIR_COUNT = 300
# The most traded pairs, most liquid first, with a plausible price: real Bitfinex ids.
MAJOR_PAIRS: tuple[tuple[str, float], ...] = (
    ("BTCUSD", 60_000.0),
    ("ETHUSD", 3_000.0),
    ("BTCUST", 60_000.0),
    ("ETHUST", 3_000.0),
    ("SOLUSD", 150.0),
    ("XRPUSD", 0.6),
    ("LTCUSD", 80.0),
    ("DOGE:USD", 0.15),
    ("ADAUSD", 0.4),
    ("AVAX:USD", 30.0),
    ("LINK:USD", 15.0),
    ("DOTUSD", 6.0),
)
# Test pairs as the real list has them (2025): listed for trading, never for market data.
TEST_PAIRS: tuple[str, ...] = (
    "TESTBTC:TESTUSD",
    "TESTBTC:TESTUSDT",
    "TESTETH:TESTUSD",
    "TESTSOL:TESTUSD",
    "TESTADA:TESTUSD",
    "TESTALGO:TESTUSD",
    "TESTAPT:TESTUSD",
    "TESTAVAX:TESTUSD",
    "TESTDOGE:TESTUSD",
    "TESTDOT:TESTUSD",
    "TESTEOS:TESTUSD",
    "TESTFIL:TESTUSD",
    "TESTLTC:TESTUSD",
    "TESTNEAR:TESTUSD",
    "TESTXAUT:TESTUSD",
    "TESTXTZ:TESTUSD",
)
TEST_PAIR_SHARE = 16 / 294  # test pairs in the 2025 list
# Quote currencies and base lengths weighted as in the 2025 list.
_QUOTES: tuple[tuple[str, float], ...] = (
    ("USD", 0.46),
    ("UST", 0.39),
    ("BTC", 0.08),
    ("EUR", 0.02),
    ("GBP", 0.015),
    ("ETH", 0.01),
    ("JPY", 0.007),
    ("XAUT", 0.007),
    ("EURR", 0.004),
    ("USDR", 0.004),
)
_BASE_LENGTHS: tuple[tuple[int, float], ...] = (
    (3, 0.60),
    (4, 0.20),
    (5, 0.09),
    (6, 0.05),
    (7, 0.04),
    (8, 0.02),
)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOP_SHARE = 0.99  # the liquid few: a trade in almost every minute
_TAIL_EXPONENT = 1.2  # how fast activity falls with rank after the liquid few
_MIN_SHARE = 0.002  # the quietest pairs still trade about three times a day
_TEST_PAIR_SHARE_OF_MINUTES = 0.01
_MAX_TEST_PAIRS = len(TEST_PAIRS)
_T = TypeVar("_T")


def unit(*parts: object) -> float:
    """A number in [0, 1) drawn from the parts (the same parts, the same number)."""
    return hash64(*parts) / float(1 << 64)


def is_test_pair(pair: str) -> bool:
    return pair.startswith("TEST")


def liquid_count(count: int) -> int:
    """How many pairs trade in almost every minute: about one in sixty, at least a few."""
    return min(count, max(3, round(count / 60)))


def activity_share(rank: int, liquid: int) -> float:
    """Expected share of minutes with a trade for the pair of this rank (0 = most traded)."""
    if rank < liquid:
        return _TOP_SHARE
    falloff: float = ((rank + 1) / liquid) ** -_TAIL_EXPONENT
    return max(_MIN_SHARE, _TOP_SHARE * falloff)


def exchange_pairs(
    seed: int, count: int = DEFAULT_EXCHANGE_PAIR_COUNT, history_days: float = 400.0
) -> tuple[PairSpec, ...]:
    """`count` pairs as the exchange lists them, alphabetically, their activity by rank."""
    if count < 1:
        raise ValueError("the exchange needs at least one pair")
    tests = min(_MAX_TEST_PAIRS, max(1, round(count * TEST_PAIR_SHARE))) if count >= 20 else 0
    traded = count - tests
    liquid = liquid_count(traded)
    specs: list[PairSpec] = []
    taken: set[str] = set()
    for rank in range(traded):
        share = activity_share(rank, liquid)
        if rank < len(MAJOR_PAIRS):
            pair, price = MAJOR_PAIRS[rank]
            listed_days_ago: float | None = None  # the majors have traded all along
        else:
            pair = _fresh_name(seed, ("rank", rank), taken)
            price = 10.0 ** (unit(seed, pair, "price") * 9.0 - 5.0)
            # A fifth of the pairs predate the history; the rest are listed at any time in it.
            listed_days_ago = unit(seed, pair, "listed") * history_days * 1.25
        taken.add(canonical_symbol(pair))
        specs.append(_spec(seed, pair, price, share, listed_days_ago))
    for pair in TEST_PAIRS[:tests]:
        days = unit(seed, pair, "listed") * history_days
        specs.append(_spec(seed, pair, 100.0, _TEST_PAIR_SHARE_OF_MINUTES, days))
    return tuple(sorted(specs, key=lambda spec: spec.pair))


def scheduled_listing(seed: int, event: int, taken: Container[str]) -> PairSpec:
    """The pair listed by the `event`-th listing of the schedule: new, so thin."""
    pair = _fresh_name(seed, ("listing", event), taken)
    share = 0.005 + 0.15 * unit(seed, pair, "activity") ** 2
    price = 10.0 ** (unit(seed, pair, "price") * 7.0 - 4.0)
    return _spec(seed, pair, price, share, None)


def delisting_order(seed: int, specs: Sequence[PairSpec]) -> list[int]:
    """Indices of the pairs the schedule delists, first to last: tail pairs only.

    The majors, the liquid and the test pairs stay, so a daemon's usual symbols survive churn.
    """
    majors = {pair for pair, _ in MAJOR_PAIRS}
    eligible = [
        i
        for i, spec in enumerate(specs)
        if spec.trade_probability < 0.5 and spec.pair not in majors and not is_test_pair(spec.pair)
    ]
    return sorted(eligible, key=lambda i: hash64(seed, specs[i].pair, "delist"))


def _spec(
    seed: int, pair: str, price: float, share: float, listed_days_ago: float | None
) -> PairSpec:
    trades = max(1.0, 40.0 * share)
    volume = 200_000.0 * max(share, 0.05) / price  # base units per traded minute
    volatility = 0.0006 + 0.0012 * unit(seed, pair, "volatility")
    return PairSpec(pair, price, volatility, share, trades, volume, listed_days_ago)


def _fresh_name(seed: int, where: tuple[object, ...], taken: Container[str]) -> str:
    """A pair id not yet taken (by canonical symbol), in Bitfinex's spelling."""
    attempt = 0
    while True:
        base = _pick(_BASE_LENGTHS, unit(seed, *where, attempt, "length"))
        letters = "".join(
            _LETTERS[hash64(seed, *where, attempt, i) % len(_LETTERS)] for i in range(base)
        )
        quote = _pick(_QUOTES, unit(seed, *where, attempt, "quote"))
        if letters != quote and letters[:4] != "TEST":
            pair = f"{letters}:{quote}" if len(letters) > 3 or len(quote) > 3 else letters + quote
            if canonical_symbol(pair) not in taken:
                return pair
        attempt += 1


def _pick(weighted: tuple[tuple[_T, float], ...], u: float) -> _T:
    total = sum(weight for _, weight in weighted)
    point = u * total
    for value, weight in weighted:
        point -= weight
        if point < 0:
            return value
    return weighted[-1][0]
