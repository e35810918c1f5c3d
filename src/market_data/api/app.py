"""The HTTP API: `create_app(daemon)` builds a FastAPI app that reads the daemon through its
view (`view.DaemonView`).

Errors: a bad parameter is a 422 naming it (FastAPI's shape); a database that cannot be reached,
or more concurrent reads than the API serves at once (see read_gate), is a 503 with Retry-After;
any other failure is a 500 with a generic message. A Host header outside API_ALLOWED_HOSTS is a
400 (a guard against DNS rebinding). Error bodies never carry driver
text, so no secret (a DATABASE_URL password) can leak through them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from market_data import __version__
from market_data.api.read_gate import ReadGate, read_permit
from market_data.errors import MarketDataError, StorageUnavailable

if TYPE_CHECKING:
    from market_data.api.view import DaemonView

log = logging.getLogger("market_data.api")

UNAVAILABLE_RETRY_AFTER_S = 5  # the daemon's own database retries start at 1 s and back off

DESCRIPTION = """\
Bitfinex OHLCV candles kept complete in your own database.

Times in responses are ISO 8601 UTC (`2026-02-05T20:00:00Z`); time parameters accept ISO 8601 or
epoch milliseconds, 1970 to 2200. Symbols accept any spelling (`BTCUSD`, `tBTC:USD`, `doge:usd`).
A bad parameter gets a 422 whose `detail[].loc` names it. `POST` endpoints need
`Authorization: Bearer <API_TOKEN>`.
"""


def create_app(daemon: DaemonView) -> FastAPI:
    from market_data.api.metrics import build_registry
    from market_data.api.routes import (
        actions,
        candles,
        coverage,
        dashboard,
        gaps,
        health,
        jobs,
        metrics,
        status,
    )

    app = FastAPI(
        title="market-data",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.daemon = daemon
    # Only the names the API is reached by (API_ALLOWED_HOSTS): a page that rebinds its own
    # domain to 127.0.0.1 sends that domain in Host and gets a 400, not the data.
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=daemon.settings.api_allowed_hosts, www_redirect=False
    )
    # Reads that can be heavy: bounded (503 + Retry-After past the bound), on a pool of their
    # own (StoreDep), never in the way of /health or the daemon's own writes.
    app.state.read_gate = ReadGate()
    app.state.metrics = build_registry(daemon, app.state.read_gate)
    app.state.read_store = daemon.store.reader(app.state.read_gate.concurrency)
    for module in (health, status, metrics, actions):
        app.include_router(module.router)
    for module in (gaps, jobs, candles, coverage):
        app.include_router(module.router, dependencies=[Depends(read_permit)])
    dashboard.mount(app)

    @app.exception_handler(StorageUnavailable)
    async def _unavailable(request: Request, exc: StorageUnavailable) -> JSONResponse:
        log.warning("API %s: database unavailable", request.url.path)
        return JSONResponse(
            {"detail": "database unavailable"},
            status_code=503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )

    @app.exception_handler(MarketDataError)
    async def _failed(request: Request, exc: MarketDataError) -> JSONResponse:
        if not daemon.state.database_ready:
            # Starting: the schema may not exist yet (migrations run after the API is up).
            return JSONResponse(
                {"detail": "database not ready yet"},
                status_code=503,
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
            )
        log.error("API %s failed: %s", request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
