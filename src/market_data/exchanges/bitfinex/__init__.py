"""The Bitfinex adapter: pure wire parsers (wire.py, frames.py), REST (rest.py), WebSocket shards
(ws.py) and connection pacing (pacing.py)."""
