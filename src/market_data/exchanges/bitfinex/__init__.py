"""The Bitfinex adapter: `BitfinexExchange` (exchange.py) implements `exchanges.base.Exchange`
over pure wire parsers (wire.py, frames.py), REST (rest.py), WebSocket shards (ws.py, pool.py)
and connection pacing (pacing.py)."""

from market_data.exchanges.bitfinex.exchange import BitfinexExchange
from market_data.exchanges.bitfinex.rest import BitfinexRest, RestStats

__all__ = ["BitfinexExchange", "BitfinexRest", "RestStats"]
