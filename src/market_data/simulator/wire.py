"""JSON text of what the simulator sends, written the way Bitfinex writes it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from market_data.simulator.prices import Ohlcv

_COMPACT = (",", ":")


def rows_json(rows: Sequence[Ohlcv]) -> str:
    """`[[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME],...]`; whole prices without `.0`, as Bitfinex does."""
    return _trim(json.dumps(rows, separators=_COMPACT))


def row_json(row: Sequence[int | float]) -> str:
    return _trim(json.dumps(row, separators=_COMPACT))


def _trim(text: str) -> str:
    # `repr` never ends a non-integral float with `.0`, so these only touch whole numbers.
    return text.replace(".0,", ",").replace(".0]", "]")


def dumps(value: object) -> str:
    return json.dumps(value, separators=_COMPACT)


def error_body(code: int, message: str) -> str:
    return dumps(["error", code, message])
