"""Which pairs the simulated exchange lists, since when and until when: the pair registry.

A pair is in `conf/pub:list:pair:exchange` from `listed_ms` until `delisted_ms`. It trades from
the first whole minute at or after its listing (a minute begun before it would hold earlier
trades) until its delisting, so REST serves its candles up to the delisting and never before
the listing. A delisted pair is refused to new WebSocket subscriptions with Bitfinex's unknown
symbol error (10300 `symbol: invalid`); channels already open go quiet but stay open, with
heartbeats: bitfinex-api.md names no message announcing a delisting, and a channel without
trades is exactly that (an inference, as the sources say nothing about delisted channels).

Changes come from a schedule drawn from the seed (every `churn_minutes` of market time one pair
is listed and one delisted) or from a test (`Market.list_pair` / `delist_pair`). Both only ever
change the future, so every candle already served stays true and no cache is invalidated.
"""

from __future__ import annotations

from collections.abc import Iterable

from market_data.models import SymbolError, canonical_symbol
from market_data.simulator.exchange import delisting_order, scheduled_listing
from market_data.simulator.pairs import PairSpec
from market_data.timeframes import DAY_MS, MINUTE_MS, align

NEVER_MS = 1 << 62


class PairBook:
    """Pair specs by index, their listing windows, and the listing schedule."""

    def __init__(
        self,
        seed: int,
        specs: Iterable[PairSpec],
        *,
        started_ms: int,
        history_start_ms: int,
        churn_minutes: float = 0.0,
    ) -> None:
        self.seed = seed
        self.specs: list[PairSpec] = []
        self.listed_ms: list[int] = []
        self.delisted_ms: list[int] = []
        self._by_symbol: dict[str, int] = {}
        self._by_pair: dict[str, int] = {}
        for spec in specs:
            self.add(spec, _initial_listing(spec, started_ms, history_start_ms))
        if churn_minutes < 0:
            raise ValueError("churn_minutes must not be negative")
        self.churn_ms = int(churn_minutes * MINUTE_MS)
        self.churn_origin_ms = align(started_ms, "1m")
        self._churn_events = 0
        self._delist_order = delisting_order(seed, self.specs) if self.churn_ms else []
        self._scheduled: list[int] = []

    # ---- lookups ----------------------------------------------------------------------------

    def add(self, spec: PairSpec, listed_ms: int) -> int:
        symbol = spec.symbol
        if symbol in self._by_symbol:
            raise ValueError(f"the market already has a pair {symbol!r}")
        index = len(self.specs)
        self.specs.append(spec)
        self.listed_ms.append(listed_ms)
        self.delisted_ms.append(NEVER_MS)
        self._by_symbol[symbol] = index
        self._by_pair[spec.pair] = index
        return index

    def index_of(self, symbol: str) -> int | None:
        try:
            return self._by_symbol.get(canonical_symbol(symbol))
        except SymbolError:
            return None

    def index_of_pair(self, pair: str) -> int | None:
        return self._by_pair.get(pair)

    def listed_at(self, index: int, at_ms: int) -> bool:
        return self.listed_ms[index] <= at_ms < self.delisted_ms[index]

    def listed_pairs(self, at_ms: int) -> list[str]:
        listed, delisted = self.listed_ms, self.delisted_ms
        return [spec.pair for i, spec in enumerate(self.specs) if listed[i] <= at_ms < delisted[i]]

    # ---- changes ----------------------------------------------------------------------------

    def list_pair(self, pair: str | PairSpec, at_ms: int, now_ms: int) -> tuple[int, int | None]:
        """List a new pair, or move a known pair's future listing; (index, former listing)."""
        spec = pair if isinstance(pair, PairSpec) else None
        name = spec.pair if spec is not None else str(pair)
        index = self.index_of_pair(name)
        if index is None:
            index = self.index_of(name)
        if index is None:
            if spec is None:
                raw = name[1:] if name[:1] == "t" and name[1:2].isupper() else name
                spec = PairSpec(raw.upper(), 100.0, trade_probability=0.3, trades_per_minute=3.0)
            return self.add(spec, at_ms), None
        if self.delisted_ms[index] != NEVER_MS:
            raise ValueError(f"{self.specs[index].pair} was delisted; Bitfinex does not relist")
        former = self.listed_ms[index]
        if former <= now_ms:
            raise ValueError(f"{self.specs[index].pair} is already listed")
        self.listed_ms[index] = at_ms
        return index, former

    def delist_pair(self, index: int, at_ms: int) -> None:
        if at_ms < self.listed_ms[index]:
            raise ValueError(f"{self.specs[index].pair} cannot be delisted before its listing")
        self.delisted_ms[index] = min(self.delisted_ms[index], at_ms)

    # ---- the schedule -----------------------------------------------------------------------

    def churn_event_ms(self, event: int) -> int:
        """When the schedule's `event`-th listing and delisting happen (event 1 is the first)."""
        return self.churn_origin_ms + event * self.churn_ms

    def catch_up(self, now_ms: int) -> None:
        """Apply every scheduled listing and delisting due by `now_ms`.

        A pair enters the registry when its listing is due, so the registry grows by one pair
        per `churn_minutes` of market time, not with traffic.
        """
        if not self.churn_ms or now_ms < self.churn_event_ms(self._churn_events + 1):
            return
        due = (now_ms - self.churn_origin_ms) // self.churn_ms
        while self._churn_events < due:
            self._churn_events += 1
            event = self._churn_events
            at = self.churn_event_ms(event)
            spec = scheduled_listing(self.seed, event, self._by_symbol)
            self._scheduled.append(self.add(spec, at))
            victim = self._delisting_victim(event)
            if victim is not None and self.listed_at(victim, at):
                self.delist_pair(victim, at)

    def _delisting_victim(self, event: int) -> int | None:
        # The seed's order of tail pairs first, then the schedule's own listings, oldest first.
        order = self._delist_order
        if event <= len(order):
            return order[event - 1]
        later = event - len(order) - 1
        return self._scheduled[later] if later < len(self._scheduled) - 1 else None


def _initial_listing(spec: PairSpec, started_ms: int, history_start_ms: int) -> int:
    if spec.listed_days_ago is None:
        return history_start_ms
    listed = align(started_ms - int(spec.listed_days_ago * DAY_MS), "1h")
    return max(history_start_ms, listed)
