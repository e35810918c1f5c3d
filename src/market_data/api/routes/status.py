"""GET /status: every series, the WebSocket connections, the loops and the backfill.

Series figures come from the store's maintained per-series stats (O(series), never count(*)).
"""

from __future__ import annotations

import time
from collections import Counter

from fastapi import APIRouter, Request

from market_data.api import views
from market_data.api.deps import DaemonDep
from market_data.api.schemas import StatusOut
from market_data.errors import StorageUnavailable
from market_data.timeframes import format_ts, now_ms

router = APIRouter(tags=["status"])


@router.get("/status", response_model=StatusOut)
async def status(request: Request, daemon: DaemonDep) -> StatusOut:
    store = daemon.store
    now = now_ms()
    reachable = True
    try:
        stats = await store.series_stats()
        empty_ms = await views.empty_spans(request.app.state, store)
        by_series = await views.open_gaps_by_series(daemon)
        total_open = sum(by_series.values())
        if total_open >= views.OPEN_GAPS_SCAN:
            total_open = await store.count_open_gaps()
    except StorageUnavailable:
        # Still worth showing the loops and connections; the series come back with the database.
        reachable, stats, by_series, total_open = False, [], Counter(), 0
        empty_ms = {}
    state = daemon.state
    return StatusOut(
        now=format_ts(now),
        started_at=format_ts(state.started_at_ms),
        uptime_seconds=round(time.time() - state.started_at_ms / 1000, 3),
        # The backend only: a path or host name tells a reader where to look, nothing they need.
        database="sqlite" if daemon.settings.is_sqlite else "postgresql",
        database_reachable=reachable,
        open_gaps=total_open,
        unknown_symbols=views.unknown_symbols(daemon),
        series=views.series_rows(daemon, stats, by_series, now, empty_ms),
        websocket=views.websocket(daemon),
        loops=views.loop_rows(daemon),
        backfill=views.backfill(daemon),
        written_by_source=dict(daemon.sink_stats.written_by_source),
        rate_limiter=views.rate_limiter(daemon),
        cluster=views.cluster(daemon),
    )
