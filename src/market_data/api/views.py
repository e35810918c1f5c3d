"""Read the daemon's state objects into the shapes /health and /status show.

The one place in the API that knows the services' state dataclasses (the metrics collector reads
its counters directly). Nothing here does I/O except through the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from market_data.api.schemas import (
    BackfillOut,
    BackfillPlanOut,
    CheckOut,
    ClusterOut,
    LoopOut,
    MemberOut,
    RateLimiterOut,
    SeriesOut,
    WebSocketOut,
    iso,
)
from market_data.api.view import DaemonView
from market_data.models import SeriesKey, SeriesStats
from market_data.scheduler import LoopStatus
from market_data.storage.base import Store
from market_data.timeframes import count_periods, format_ts, next_open, nominal_ms

# Open gaps read to count them per series; beyond this the per-series counts are a lower bound
# (the total comes from count_open_gaps()).
OPEN_GAPS_SCAN = 1000
# Grace on top of the reconnect backoff before a down WebSocket connection degrades /health.
WS_DOWN_GRACE_S = 15.0
# REST outcomes that mean the exchange could not be reached (rather than refused a request).
_UNREACHABLE = ("connection_error", "timeout", "server_error")


def check(ok: bool, detail: str) -> CheckOut:
    return CheckOut(status="ok" if ok else "degraded", detail=detail)


# -- series -----------------------------------------------------------------------------------


async def open_gaps_by_series(daemon: DaemonView) -> Counter[SeriesKey]:
    gaps = await daemon.store.list_gaps(repaired=False, limit=OPEN_GAPS_SCAN)
    return Counter(g.series for g in gaps)


def series_rows(
    daemon: DaemonView,
    stats: list[SeriesStats],
    open_gaps: Counter[SeriesKey],
    now: int,
    empty_ms: Mapping[SeriesKey, int] | None = None,
) -> list[SeriesOut]:
    # Per request with 600 series every lookup counts: SeriesKey hashes in Python, so each key
    # is looked up once per mapping, and only the stored series not configured are sorted.
    universe = daemon.universe
    configured = list(dict.fromkeys(universe.all_series() + universe.delisted_series()))
    derived = set(universe.known_derived())
    by_key = {SeriesKey(s.symbol, s.timeframe): s for s in stats}
    configured_set = set(configured)
    extra = sorted((k for k in by_key if k not in configured_set), key=str)
    empty = empty_ms or {}
    rows: list[SeriesOut] = []
    for key in (*configured, *extra):
        st = by_key.get(key)
        tf = key.timeframe
        if st is None:
            last = first = last_final = None
            count = 0
        else:
            last, first, last_final, count = (
                st.last_ts,
                st.first_ts,
                st.last_final_ts,
                st.candle_count,
            )
        rows.append(
            SeriesOut(
                symbol=key.symbol,
                timeframe=tf,
                derived=bool(derived) and key in derived,
                configured=key in configured_set,
                state=universe.state_of(key.symbol),
                candle_count=count,
                first_candle=iso(first),
                last_candle=iso(last),
                last_closed_candle=iso(last_final),
                lag_seconds=None if last is None else max(0.0, (now - next_open(last, tf)) / 1000),
                open_gaps=open_gaps.get(key, 0) if open_gaps else 0,
                **_completeness(st, empty.get(key, 0) if empty else 0),
            )
        )
    return rows


# The proven-empty totals behind completeness are one grouped query over every empty range:
# cheap for most databases, not for millions of ranges, and a figure that may lag this long.
EMPTY_SPANS_TTL_S = 30.0


async def empty_spans(app_state: Any, store: Store) -> Mapping[SeriesKey, int]:
    """`store.empty_spans()`, read at most every EMPTY_SPANS_TTL_S per app (/status is polled
    every few seconds by the dashboard)."""
    cached: tuple[float, Mapping[SeriesKey, int]] | None = getattr(app_state, "empty_spans", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < EMPTY_SPANS_TTL_S:
        return cached[1]
    spans = await store.empty_spans()
    app_state.empty_spans = (now, spans)
    return spans


def _completeness(st: SeriesStats | None, empty_ms: int) -> dict[str, Any]:
    """Expected periods from the first to the newest candle, the proven-empty ones among them,
    and (stored + empty) / expected."""
    if st is None or st.first_ts is None or st.last_ts is None:
        return {}
    tf = st.timeframe
    expected = count_periods(st.first_ts, next_open(st.last_ts, tf), tf)
    # Empty ranges lie on period bounds; a month's length varies, so months are approximate.
    empty = empty_ms // nominal_ms(tf)
    ratio = None if expected <= 0 else min(1.0, (st.candle_count + empty) / expected)
    return {
        "expected_candles": expected,
        "empty_candles": empty,
        "completeness": None if ratio is None else round(ratio, 6),
    }


def rate_limiter(daemon: DaemonView) -> RateLimiterOut:
    st = daemon.limiter_stats
    return RateLimiterOut(
        delay_seconds=daemon.settings.rate_limit_delay,
        requests=st.requests,
        rate_limited=st.rate_limited,
        gave_up=st.gave_up,
        waited_seconds=round(st.waited_seconds, 3),
        current_backoff_seconds=st.current_backoff,
        penalty_seconds_left=round(daemon.rate_limit_penalty_seconds(), 3),
        waiting=dict(st.waiting),
        rest_outcomes=dict(daemon.rest_stats.requests),
    )


# -- loops, WebSocket, backfill ---------------------------------------------------------------


def loop_rows(daemon: DaemonView) -> list[LoopOut]:
    return [_loop(status) for status in daemon.loop_statuses]


def _loop(s: LoopStatus) -> LoopOut:
    return LoopOut(
        name=s.name,
        interval_seconds=s.interval_s,
        running=s.running,
        runs=s.runs,
        failures=s.failures,
        consecutive_failures=s.consecutive_failures,
        last_start=iso(s.last_start_ms),
        last_finish=iso(s.last_finish_ms),
        last_success=iso(s.last_success_ms),
        last_duration_seconds=s.last_duration_s,
        last_result=s.last_result,
        last_error=s.last_error,
        last_error_at=iso(s.last_error_ms),
        next_run=iso(s.next_run_ms),
    )


@dataclass(slots=True)
class WsHealth:
    ok: bool
    detail: str


def websocket(daemon: DaemonView) -> WebSocketOut:
    st = daemon.ws_state
    if st is None:
        return WebSocketOut(enabled=False, connections=0, subscriptions=0, queue_depth=None)
    conns = st.connections
    return WebSocketOut(
        enabled=True,
        connections=sum(1 for c in conns if c.state == "subscribed"),
        subscriptions=sum(len(c.subscriptions) for c in conns if c.state == "subscribed"),
        queue_depth=st.queue_depth,
        details={
            "configured_channels": st.subscribed_series,
            "queue_bound": st.queue_bound,
            "queue_max_depth": st.queue_max_depth,
            "pending_rows": st.pending,
            "candles_written": st.candles_written,
            "last_flush": iso(st.last_flush_ms),
            "database_outage": st.db_outage,
            "failed_subscriptions": st.failed_subscriptions,
            "unchecked_final_oldest_age_seconds": st.unchecked_final_oldest_age_seconds,
            "final_corrections": st.final_check.corrections,
            "unconfirmed_periods": st.final_check.pending_periods,
            "confirmations": st.final_check.confirmations,
            "shards": [
                {
                    "id": c.id,
                    "state": c.state,
                    "subscriptions": len(c.subscriptions),
                    # Which channels: in a cluster, this member's share (at most
                    # WS_MAX_SUBSCRIPTIONS_PER_CONNECTION names per shard).
                    "channels": list(c.subscriptions),
                    "connected_since": iso(c.connected_since_ms),
                    "last_message": iso(c.last_message_ms),
                    "reconnects": c.reconnects,
                    "messages": c.messages,
                    "last_error": c.last_error,
                }
                for c in conns
            ],
        },
    )


def websocket_health(daemon: DaemonView, now: int) -> WsHealth:
    st = daemon.ws_state
    if st is None:
        return WsHealth(True, "disabled")
    if st.db_outage:
        return WsHealth(False, f"database outage: {st.pending} candles held in memory")
    limit_ms = (daemon.settings.ws_reconnect_max_backoff + WS_DOWN_GRACE_S) * 1000
    conns = st.connections
    down = []
    for c in conns:
        if c.state in ("subscribed", "paused", "closed"):
            continue
        since = c.last_message_ms or c.connected_since_ms or daemon.state.started_at_ms
        if now - since > limit_ms:
            down.append(f"connection {c.id} {c.state} ({c.last_error or 'no answer'})")
    if down:
        return WsHealth(False, "; ".join(down))
    if st.failed_subscriptions:
        return WsHealth(False, f"refused by the exchange: {st.failed_subscriptions}")
    live = sum(1 for c in conns if c.state == "subscribed")
    return WsHealth(True, f"{live}/{len(conns)} connections subscribed")


def cluster(daemon: DaemonView) -> ClusterOut:
    st = daemon.cluster_state
    members = [
        MemberOut(
            id=m.id,
            heartbeat=format_ts(m.heartbeat),
            channels=m.channels,
            jobs=m.jobs,
            alive=m.alive,
        )
        for m in st.members
    ]
    return ClusterOut(
        self_id=st.self_id,
        members=members,
        expected_channels=st.expected_channels,
        held_channels=st.held_channels,
        fenced=st.fenced,
    )


def backfill(daemon: DaemonView) -> BackfillOut:
    now = time.monotonic()
    series: list[dict[str, object]] = []
    for p in list(daemon.backfill_progress.values()):
        eta = p.eta_seconds(now) if p.state == "running" else None
        series.append(
            {
                "symbol": p.symbol,
                "timeframe": p.timeframe,
                "state": p.state,
                "fraction": round(p.fraction, 4),
                "candles": p.candles,
                "requests": p.requests,
                "rejected": p.rejected,
                "eta_seconds": None if eta is None else round(eta, 1),
                "error": p.error,
            }
        )
    plan = daemon.backfill_plan.summary(daemon.settings.rate_limit_delay)
    return BackfillOut(
        state=daemon.state.backfill, series=series, plan=BackfillPlanOut.model_validate(plan)
    )


def unknown_symbols(daemon: DaemonView) -> list[str]:
    found = set(daemon.state.unknown_symbols)
    ws = daemon.ws_state
    if ws is not None:
        found.update(ws.unknown_symbols)
    # A pair the exchange delisted is expected to be missing from its list: not a failure.
    return sorted(found - set(daemon.universe.delisted_symbols))


def exchange_error(daemon: DaemonView) -> str | None:
    """Why the exchange looks unreachable: the startup backfill's retry reason, REST requests
    failing with none ever answered, or a series the running backfill just failed on for an
    exchange error; None when nothing says so."""
    if daemon.state.exchange_error is not None:
        return daemon.state.exchange_error
    requests = daemon.rest_stats.requests
    failed = sum(n for outcome, n in requests.items() if outcome in _UNREACHABLE)
    if failed and not requests.get("ok"):
        return f"no request has succeeded yet ({failed} failed)"
    for p in list(daemon.backfill_progress.values()):
        if p.state == "failed" and p.error and p.exchange_outage:
            return p.error
    return None
