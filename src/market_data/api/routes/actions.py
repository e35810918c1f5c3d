"""State-changing endpoints: they start work in the daemon's task group and answer 202 at once.

Both need `Authorization: Bearer <API_TOKEN>`; with API_TOKEN unset they refuse (403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from market_data.api.deps import Authorized, DaemonDep, OptionalSymbol, OptionalTimeframe
from market_data.api.params import bad_parameter
from market_data.api.schemas import AcceptedOut, ErrorOut
from market_data.errors import DaemonBusy, DaemonNotRunning
from market_data.timeframes import source_of

router = APIRouter(tags=["actions"], dependencies=[Authorized])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "no bearer token"},
    403: {"model": ErrorOut, "description": "wrong token, or API_TOKEN unset (disabled)"},
    409: {"model": ErrorOut, "description": "the same work is already running"},
    503: {"model": ErrorOut, "description": "the daemon is starting or stopping"},
}


@router.post("/backfill", status_code=202, response_model=AcceptedOut, responses=_ERRORS)
async def start_backfill(
    daemon: DaemonDep,
    symbol: OptionalSymbol,
    timeframe: OptionalTimeframe,
    days: Annotated[float | None, Query(gt=0, le=36_500, description="history to fetch")] = None,
) -> AcceptedOut:
    """Backfill configured series (all, or those matching symbol/timeframe) in the background."""
    settings, universe = daemon.settings, daemon.universe
    if symbol is not None and not universe.is_active(symbol):
        why = "delisted" if universe.state_of(symbol) == "delisted" else "not configured"
        raise bad_parameter("symbol", f"{symbol} is {why} (BITFINEX_SYMBOLS)", symbol)
    if timeframe is not None and timeframe not in settings.bitfinex_timeframes:
        raise bad_parameter(
            "timeframe", f"{timeframe} is not configured (BITFINEX_TIMEFRAMES)", timeframe
        )
    series = None
    if symbol is not None or timeframe is not None:
        wanted_tf = None if timeframe is None else source_of(timeframe)
        series = [
            s
            for s in universe.native_series()
            if (symbol is None or s.symbol == symbol)
            and (wanted_tf is None or s.timeframe == wanted_tf)
        ]
    try:
        task = daemon.trigger_backfill(series, days)
    except DaemonBusy as exc:
        raise HTTPException(409, str(exc)) from None
    except DaemonNotRunning as exc:
        raise HTTPException(503, str(exc)) from None
    scope = "all configured series" if series is None else ", ".join(map(str, series))
    return AcceptedOut(accepted=True, task=task, detail=f"backfill started: {scope}")


@router.post("/gaps/repair", status_code=202, response_model=AcceptedOut, responses=_ERRORS)
async def start_gap_repair(
    daemon: DaemonDep,
    max: Annotated[
        int | None, Query(ge=1, le=100_000, description="at most this many exchange requests")
    ] = None,
) -> AcceptedOut:
    """Repair open gaps now (with at most `max` exchange requests) in the background."""
    try:
        task = daemon.trigger_gap_repair(max)
    except DaemonBusy as exc:
        raise HTTPException(409, str(exc)) from None
    except DaemonNotRunning as exc:
        raise HTTPException(503, str(exc)) from None
    return AcceptedOut(accepted=True, task=task, detail="gap repair started")
