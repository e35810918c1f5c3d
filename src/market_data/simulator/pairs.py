"""The simulated market's pairs and how each one trades."""

from __future__ import annotations

from dataclasses import dataclass

from market_data.models import canonical_symbol


@dataclass(frozen=True, slots=True)
class PairSpec:
    """One trading pair of the simulated exchange.

    `pair` is the exchange spelling (`BTCUSD`, `DOGE:USD`); `symbol` the project's (`DOGEUSD`).
    `trade_probability` is the share of minutes with at least one trade (a thin pair has most
    minutes empty, so no candle); `trades_per_minute` the mean number of trades in a traded minute
    (each trade is one WebSocket update). `listed_days_ago` makes the pair's history start that
    many days before the simulator started instead of at the start of the whole history.
    """

    pair: str
    price: float
    volatility: float = 0.0006
    trade_probability: float = 0.85
    trades_per_minute: float = 20.0
    volume: float = 2.0
    listed_days_ago: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.trade_probability <= 1.0:
            raise ValueError(f"{self.pair}: trade_probability must be within [0, 1]")
        if self.price <= 0 or self.volatility < 0 or self.volume <= 0:
            raise ValueError(f"{self.pair}: price and volume must be positive")
        if self.trades_per_minute < 1:
            raise ValueError(f"{self.pair}: trades_per_minute must be at least 1")
        if self.listed_days_ago is not None and self.listed_days_ago < 0:
            raise ValueError(f"{self.pair}: listed_days_ago must not be negative")

    @property
    def symbol(self) -> str:
        return canonical_symbol(self.pair)


THIN_PAIR = "ZRXUSD"
NEW_PAIR = "APTUSD"
COLON_PAIR = "DOGE:USD"

# BTCUSD, ETHUSD and SOLUSD are the daemon's default symbols, so the demo works out of the box.
DEFAULT_PAIRS: tuple[PairSpec, ...] = (
    PairSpec("BTCUSD", 60_000.0, 0.0006, 0.85, 30.0, 2.0),
    PairSpec("ETHUSD", 3_000.0, 0.0008, 0.80, 20.0, 20.0),
    PairSpec("SOLUSD", 150.0, 0.0010, 0.70, 12.0, 100.0),
    PairSpec(COLON_PAIR, 0.15, 0.0012, 0.60, 8.0, 20_000.0),
    PairSpec(THIN_PAIR, 0.40, 0.0015, 0.15, 2.0, 500.0),
    PairSpec(NEW_PAIR, 8.0, 0.0012, 0.50, 6.0, 50.0, listed_days_ago=21.0),
)


def pairs_by_name(names: list[str] | tuple[str, ...]) -> tuple[PairSpec, ...]:
    """Pick pairs by exchange or canonical name; unknown names get a generic liquid spec."""
    known = {spec.symbol: spec for spec in DEFAULT_PAIRS}
    chosen: list[PairSpec] = []
    for name in names:
        symbol = canonical_symbol(name)
        spec = known.get(symbol)
        if spec is None:
            raw = name.strip()
            pair = raw[1:] if raw[:1] == "t" and raw[1:2].isupper() else raw.upper()
            spec = PairSpec(pair, 100.0)
        chosen.append(spec)
    return tuple(chosen)
