"""GET /metrics: Prometheus text format, from the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from market_data.api.deps import DaemonDep
from market_data.api.metrics import DaemonCollector, SeriesSnapshot
from market_data.errors import MarketDataError
from market_data.timeframes import now_ms

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request, daemon: DaemonDep) -> Response:
    registry: CollectorRegistry
    collector: DaemonCollector
    registry, collector = request.app.state.metrics
    try:
        rows = await daemon.store.series_stats()
        collector.snapshot = SeriesSnapshot(rows, True, now_ms())
    except MarketDataError:
        collector.snapshot = SeriesSnapshot([], False, now_ms())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
