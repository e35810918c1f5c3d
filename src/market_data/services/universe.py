"""The series universe: which symbols this daemon works on now (active) and which it used to
(delisted), at every configured timeframe.

With explicit names only (BITFINEX_SYMBOLS=BTCUSD,ETHUSD) it is static: the names, as before,
unknown ones reported by the services that resolve them. With patterns (`all`, `*USD`...) the
symbols come from the exchange's pair list: `refresh(pairs)` (at start, daily, on a WebSocket
reconnect) adds newly listed matches and moves vanished ones to `delisted`. Explicit names stay
active whatever the list says, so a name behaves exactly as without patterns.

A delisted series is not streamed, backfilled, updated, gap-detected or repaired; it keeps its
data, retention still applies, and /status shows it with `state: delisted`. After a restart the
store's series matching the configuration but no longer listed are delisted again
(`note_stored`): the store is the memory, no table of its own.

Services read the series lists here rather than from the settings; listeners (the daemon) hear
of each change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from market_data.config import Settings
from market_data.models import SeriesKey, SymbolError, canonical_symbol
from market_data.symbols import derived_series, matching_symbols, native_series, wanted

log = logging.getLogger(__name__)

SeriesState = Literal["active", "delisted"]
Listener = Callable[["UniverseChange"], None]


@dataclass(frozen=True, slots=True)
class UniverseChange:
    """Symbols a refresh added (newly listed or re-listed) and removed (delisted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class SeriesUniverse:
    def __init__(self, settings: Settings, symbols: Iterable[str] | None = None) -> None:
        self._spec = settings.symbol_spec
        self._timeframes = tuple(settings.bitfinex_timeframes)
        self.dynamic = settings.has_symbol_patterns
        self.refreshed = False  # whether the exchange's pair list has been read once
        self._active: list[str] = list(settings.bitfinex_symbols if symbols is None else symbols)
        self._delisted: dict[str, None] = {}
        self._listeners: list[Listener] = []
        self._rebuild()

    @classmethod
    def static(cls, settings: Settings) -> SeriesUniverse:
        """The explicit names only (patterns not resolved): one-shot commands, tests."""
        return cls(settings)

    # -- reading -------------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._active)

    @property
    def delisted_symbols(self) -> tuple[str, ...]:
        return tuple(self._delisted)

    @property
    def timeframes(self) -> tuple[str, ...]:
        return self._timeframes

    def native_series(self) -> list[SeriesKey]:
        """Active series fetched from the exchange (sources of derived ones included)."""
        return list(self._native)

    def derived_series(self) -> list[SeriesKey]:
        """Active series aggregated locally (e.g. 4h)."""
        return list(self._derived)

    def all_series(self) -> list[SeriesKey]:
        """Every active series: native ones first, then derived ones."""
        return list(self._native) + list(self._derived)

    def delisted_series(self) -> list[SeriesKey]:
        symbols = list(self._delisted)
        return native_series(symbols, self._timeframes) + derived_series(symbols, self._timeframes)

    def known_derived(self) -> frozenset[SeriesKey]:
        """Derived series, active and delisted (what the aggregator may be asked to rebuild)."""
        return self._known_derived

    def state_of(self, symbol: str) -> SeriesState:
        return "delisted" if symbol in self._delisted else "active"

    def is_active(self, symbol: str) -> bool:
        return symbol in self._active_set

    def wants(self, symbol: str) -> bool:
        """Whether the configuration asks for `symbol` (a name, or a pattern's match)."""
        return wanted(self._spec, symbol)

    # -- changing ------------------------------------------------------------------------------

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def refresh(self, pairs: Iterable[str]) -> UniverseChange:
        """Take the exchange's current pair ids: matches of the patterns (test pairs never)
        plus the explicit names become the active set. Returns what changed."""
        pairs = list(pairs)
        matched = matching_symbols(self._spec.patterns, pairs)
        new = list(dict.fromkeys([*self._spec.names, *matched]))
        old = set(self._active)
        change = UniverseChange(
            added=tuple(s for s in new if s not in old),
            removed=tuple(s for s in self._active if s not in set(new)),
        )
        self._active = new
        for symbol in change.removed:
            self._delisted[symbol] = None
        for symbol in change.added:
            self._delisted.pop(symbol, None)
        self.refreshed = True
        self._rebuild()
        if change:
            for listener in list(self._listeners):
                listener(change)
        return change

    def note_stored(self, symbols: Iterable[str]) -> list[str]:
        """Stored symbols the configuration asks for that are not active: delisted (after a
        restart). Only with patterns and once the pair list is known. Returns the new ones."""
        if not self.dynamic or not self.refreshed:
            return []
        found: list[str] = []
        for raw in symbols:
            try:
                symbol = canonical_symbol(raw)
            except SymbolError:
                continue
            if symbol in self._active_set or symbol in self._delisted or not self.wants(symbol):
                continue
            self._delisted[symbol] = None
            found.append(symbol)
        if found:
            self._rebuild()
        return found

    def _rebuild(self) -> None:
        # Cached: the sink asks for the derived series on every write.
        self._active_set = frozenset(self._active)
        self._native = tuple(native_series(self._active, self._timeframes))
        self._derived = tuple(derived_series(self._active, self._timeframes))
        self._known_derived = frozenset(
            [*self._derived, *derived_series(self._delisted, self._timeframes)]
        )
