"""Dependencies shared by the routes, as `Annotated` aliases (FastAPI's recommended style)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request

from market_data.api.params import parse_symbol, parse_tf
from market_data.api.view import DaemonView
from market_data.storage.base import Store


def get_daemon(request: Request) -> DaemonView:
    daemon: DaemonView = request.app.state.daemon
    return daemon


def get_store(request: Request) -> Store:
    """The store for API reads: its own pool, sized to the read gate (see read_gate)."""
    store: Store = request.app.state.read_store
    return store


DaemonDep = Annotated[DaemonView, Depends(get_daemon)]
StoreDep = Annotated[Store, Depends(get_store)]


def optional_symbol(
    symbol: Annotated[
        str | None,
        Query(max_length=40, description="pair, any spelling: BTCUSD, tBTC:USD, doge:usd"),
    ] = None,
) -> str | None:
    return None if symbol is None else parse_symbol("symbol", symbol)


def required_symbol(
    symbol: Annotated[
        str, Query(max_length=40, description="pair, any spelling: BTCUSD, tBTC:USD, doge:usd")
    ],
) -> str:
    return parse_symbol("symbol", symbol)


def optional_timeframe(
    timeframe: Annotated[
        str | None, Query(max_length=8, description="1m 5m 15m 30m 1h 3h 6h 12h 1d 1w 14d 1M, 4h")
    ] = None,
) -> str | None:
    return None if timeframe is None else parse_tf("timeframe", timeframe)


def required_timeframe(
    timeframe: Annotated[
        str, Query(max_length=8, description="1m 5m 15m 30m 1h 3h 6h 12h 1d 1w 14d 1M, 4h")
    ],
) -> str:
    return parse_tf("timeframe", timeframe)


OptionalSymbol = Annotated[str | None, Depends(optional_symbol)]
RequiredSymbol = Annotated[str, Depends(required_symbol)]
OptionalTimeframe = Annotated[str | None, Depends(optional_timeframe)]
RequiredTimeframe = Annotated[str, Depends(required_timeframe)]


def require_token(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="Bearer <API_TOKEN>", include_in_schema=True)
    ] = None,
) -> None:
    """State-changing endpoints: `Authorization: Bearer <API_TOKEN>`; refused when it is unset."""
    token = request.app.state.daemon.settings.api_token
    if token is None or not token.get_secret_value():
        raise HTTPException(403, "state-changing endpoints are disabled: API_TOKEN is not set")
    if not authorization:
        raise HTTPException(
            401,
            "missing Authorization: Bearer <API_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            "expected Authorization: Bearer <API_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "invalid token")


Authorized = Depends(require_token)
