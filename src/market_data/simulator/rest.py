"""The REST side of the simulator: Bitfinex's candle, pair-list and status endpoints.

Answers are built as plain (status, body) pairs; `server.py` puts them on the wire.
Semantics follow bitfinex-api.md §1: newest first unless `sort=1`, default limit 120 (also for
`limit=0`), max 10000, inclusive `start`/`end` (0 means unset), `sort=1` without `start` gives the
oldest history, unknown pairs get `[]`, timeframes Bitfinex does not serve get HTTP 500 10020.
Configuration lists (`/v2/conf/...`, one array per comma-separated key) are in `conf.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from market_data.simulator.conf import CONF_PREFIX, BadConfRequest, conf_answer, conf_keys
from market_data.simulator.market import Market
from market_data.simulator.wire import dumps, error_body, row_json, rows_json
from market_data.timeframes import from_exchange

DEFAULT_LIMIT = 120
MAX_LIMIT = 10_000
# The exchange's spellings; `1d`, `4h`, `2h` and the like are refused as Bitfinex refuses them.
SERVED_TIMEFRAMES = frozenset(
    ("1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1D", "1W", "14D", "1M")
)
STATUS_PATH = "/v2/platform/status"
_CANDLES_PREFIX = "/v2/candles/"
_FAR_FUTURE_MS = 1 << 62


@dataclass(frozen=True, slots=True)
class RestAnswer:
    status: int
    body: str
    outcome: str = "ok"


class BadParam(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: invalid")
        self.name = name


def endpoint_of(path: str) -> str:
    if path.startswith(_CANDLES_PREFIX):
        return "candles_last" if path.endswith("/last") else "candles_hist"
    if path.startswith(CONF_PREFIX):
        return "conf"
    if path == STATUS_PATH:
        return "platform_status"
    return "unknown"


def bad_request(message: str) -> RestAnswer:
    return RestAnswer(500, error_body(10020, message), "bad_request")


def answer(market: Market, target: str, maintenance: bool) -> RestAnswer:
    """The answer to `GET target` (path and query) as the exchange would give it."""
    parts = urlsplit(target)
    path = unquote(parts.path)
    if path == STATUS_PATH:
        return RestAnswer(200, "[0]" if maintenance else "[1]")
    if path.startswith(CONF_PREFIX):
        try:
            keys = conf_keys(path)
        except BadConfRequest as exc:
            return bad_request(str(exc))
        return RestAnswer(200, dumps(conf_answer(market, keys)))
    if path.startswith(_CANDLES_PREFIX):
        try:
            return _candles(market, path[len(_CANDLES_PREFIX) :], parse_qs(parts.query))
        except BadParam as exc:
            return bad_request(str(exc))
    return RestAnswer(404, error_body(10001, "not found"), "not_found")


def _candles(market: Market, rest: str, query: dict[str, list[str]]) -> RestAnswer:
    key, _, section = rest.rpartition("/")
    if section not in ("hist", "last"):
        return RestAnswer(404, error_body(10001, "section: invalid"), "not_found")
    fields = key.split(":", 2)
    if len(fields) != 3 or fields[0] != "trade" or not fields[1]:
        # The docs render the key as `trade::...`; users who copied that got `[]`.
        return RestAnswer(200, "[]")
    if fields[1] not in SERVED_TIMEFRAMES:
        raise BadParam("time_frame")
    tf = from_exchange(fields[1])
    symbol = fields[2]
    index = market.index_of_pair_with_history(symbol[1:]) if symbol.startswith("t") else None
    sort = _int(query, "sort", 0)
    limit = _int(query, "limit", 0) or DEFAULT_LIMIT
    if limit < 0 or limit > MAX_LIMIT:
        raise BadParam("limit")
    start = _int(query, "start", 0)
    end = _int(query, "end", 0) or _FAR_FUTURE_MS
    if start < 0 or end < 0:
        raise BadParam("start" if start < 0 else "end")
    empty = "[]"
    if index is None:
        return RestAnswer(200, empty)
    now = market.now_ms()
    if section == "last":
        rows = market.select(index, tf, 0, end, now, limit=1, ascending=False)
        return RestAnswer(200, row_json(rows[0]) if rows else empty)
    rows = market.select(index, tf, start, end, now, limit=limit, ascending=sort == 1)
    return RestAnswer(200, rows_json(rows))


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values or values[-1] == "":
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise BadParam(name) from None
