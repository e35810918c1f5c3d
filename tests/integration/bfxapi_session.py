"""A session of the official Bitfinex client (bitfinex-api-py) against given URLs, run as a script
by tests/integration/test_real_clients.py in the client's own virtualenv (it pins websockets 12,
which this project cannot share). It prints one JSON object a line:

- `{"rest": [[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME], ...]}`: `get_candles_hist` of tBTCUSD 1m
  from START_MS, ascending, LIMIT rows;
- `{"snapshot": [newest row], "count": n}` for the candle snapshot of its WebSocket subscription
  to trade:1m:tBTCUSD (the client reports it once per subscription, not again after a
  reconnect), then `{"update": row}` for every update;
- `{"done": true}` once it has closed, after a line (or the end) on its stdin.

    python bfxapi_session.py REST_URL WS_URL START_MS LIMIT
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

from bfxapi import Client


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def row(candle: Any) -> list[Any]:
    return [candle.mts, candle.open, candle.close, candle.high, candle.low, candle.volume]


def main() -> int:
    rest_url, ws_url, start_ms, limit = sys.argv[1:5]
    rest = Client(rest_host=f"{rest_url}/v2")
    candles = rest.rest.public.get_candles_hist(
        "tBTCUSD", "1m", sort=1, start=start_ms, limit=int(limit)
    )
    emit(rest=[row(c) for c in candles])

    bfx = Client(wss_host=ws_url)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    @bfx.wss.on("open")
    async def on_open() -> None:
        await bfx.wss.subscribe("candles", key="trade:1m:tBTCUSD")

    @bfx.wss.on("candles_snapshot")
    def on_snapshot(_subscription: Any, snapshot: list[Any]) -> None:
        emit(snapshot=row(snapshot[0]), count=len(snapshot))

    @bfx.wss.on("candles_update")
    def on_update(_subscription: Any, candle: Any) -> None:
        emit(update=row(candle))

    def stop_on_stdin() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(lambda: loop.create_task(bfx.wss.close()))

    threading.Thread(target=stop_on_stdin, daemon=True).start()
    loop.run_until_complete(bfx.wss.start())
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
