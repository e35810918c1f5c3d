"""GET /health: ok or degraded, with one entry per check; 503 when the database is unreachable.

The database check is the read side (a fresh connection answers) and the write side (the
outcome of the daemon's latest writes): read-only, full or unreachable for writes is `degraded`
with the reason, and 503 is kept for a database that cannot be read at all.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from market_data.api import views
from market_data.api.deps import DaemonDep
from market_data.api.schemas import CheckOut, HealthOut
from market_data.errors import MarketDataError
from market_data.timeframes import format_ts, now_ms

router = APIRouter(tags=["health"])

PING_TIMEOUT_S = 3.0


async def _database(daemon: DaemonDep) -> CheckOut:
    """`down` (503) only when nothing can be read; writes failing is `degraded`, named."""
    try:
        # A fresh connection of its own (Store.ping): never queued behind API reads.
        await asyncio.wait_for(daemon.store.ping(), PING_TIMEOUT_S)
    except (MarketDataError, TimeoutError, OSError) as exc:
        # The exception's own text may quote the server; the type is enough here.
        kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return CheckOut(status="down", detail=f"unreachable ({kind})")
    writes = daemon.store.write_health
    if writes.failing:
        # What the daemon's own writes met: a read ping cannot see a read-only or full disk.
        since = format_ts(writes.failing_since_ms) if writes.failing_since_ms else "?"
        return CheckOut(
            status="degraded",
            detail=f"reachable, but writes fail: {writes.fault} (since {since}, "
            f"{writes.failures} failed writes in a row)",
        )
    if not daemon.state.database_ready:
        return CheckOut(status="degraded", detail="reachable, schema not migrated yet")
    if writes.last_ok_ms is None:
        return CheckOut(status="ok", detail="reachable")
    return CheckOut(status="ok", detail=f"reachable, last write {format_ts(writes.last_ok_ms)}")


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "the database is unreachable"}},
)
async def health(daemon: DaemonDep) -> JSONResponse:
    now = now_ms()
    state = daemon.state
    checks: dict[str, CheckOut] = {"database": await _database(daemon)}
    phase_ok = state.phase == "running" and state.crashed is None
    checks["daemon"] = views.check(
        phase_ok, (state.crashed and f"task died: {state.crashed}") or state.phase
    )
    ws = views.websocket_health(daemon, now)
    checks["websocket"] = views.check(ws.ok, ws.detail)
    loops = daemon.loop_statuses
    failing = [status for status in loops if status.failing]
    checks["loops"] = views.check(
        not failing,
        "; ".join(
            f"{s.name}: {s.consecutive_failures} failures in a row ({s.last_error})"
            for s in failing
        )
        or f"{len(loops)} loops healthy",
    )
    unknown = views.unknown_symbols(daemon)
    checks["symbols"] = views.check(
        not unknown,
        f"not listed by the exchange: {', '.join(unknown)}"
        if unknown
        else f"{len(daemon.universe.symbols)} symbols listed",
    )
    exchange_error = views.exchange_error(daemon)
    checks["exchange"] = views.check(
        exchange_error is None,
        f"unreachable: {exchange_error}" if exchange_error else "reachable",
    )
    checks["cluster"] = views.check(*daemon.cluster_share())
    checks["backfill"] = views.check(
        state.backfill_error is None, state.backfill_error or state.backfill
    )
    healthy = all(c.status == "ok" for c in checks.values())
    body = HealthOut(status="ok" if healthy else "degraded", checks=checks)
    code = 503 if checks["database"].status == "down" else 200
    return JSONResponse(body.model_dump(), status_code=code)
