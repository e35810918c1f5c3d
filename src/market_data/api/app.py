"""The HTTP API: `create_app(daemon)` builds a FastAPI app that reads the daemon through its
view (`view.DaemonView`).

Errors: a bad parameter is a 422 naming it (FastAPI's shape); a database that cannot be reached
is a 503; any other failure is a 500 with a generic message. Error bodies never carry driver
text, so no secret (a DATABASE_URL password) can leak through them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from market_data import __version__
from market_data.errors import MarketDataError, StorageUnavailable

if TYPE_CHECKING:
    from market_data.api.view import DaemonView

log = logging.getLogger("market_data.api")

DESCRIPTION = """\
Bitfinex OHLCV candles kept complete in your own database.

Times in responses are ISO 8601 UTC (`2026-02-05T20:00:00Z`); time parameters accept ISO 8601 or
epoch milliseconds. Symbols accept any spelling (`BTCUSD`, `tBTC:USD`, `doge:usd`). A bad parameter
gets a 422 whose `detail[].loc` names it. `POST` endpoints need `Authorization: Bearer <API_TOKEN>`.
"""


def create_app(daemon: DaemonView) -> FastAPI:
    from market_data.api.metrics import build_registry
    from market_data.api.routes import actions, candles, gaps, health, jobs, metrics, status

    app = FastAPI(
        title="market-data", version=__version__, description=DESCRIPTION,
        docs_url="/docs", redoc_url=None,
    )
    app.state.daemon = daemon
    app.state.metrics = build_registry(daemon)
    for module in (health, status, gaps, jobs, candles, metrics, actions):
        app.include_router(module.router)

    @app.exception_handler(StorageUnavailable)
    async def _unavailable(request: Request, exc: StorageUnavailable) -> JSONResponse:
        log.warning("API %s: database unavailable", request.url.path)
        return JSONResponse({"detail": "database unavailable"}, status_code=503)

    @app.exception_handler(MarketDataError)
    async def _failed(request: Request, exc: MarketDataError) -> JSONResponse:
        if not daemon.state.database_ready:
            # Starting: the schema may not exist yet (migrations run after the API is up).
            return JSONResponse({"detail": "database not ready yet"}, status_code=503)
        log.error("API %s failed: %s", request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
