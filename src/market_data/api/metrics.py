"""Prometheus metrics: one collector reading the daemon's state objects at scrape time.

Each app gets its own `CollectorRegistry` (never the global one), so several daemons or test apps
in one process do not collide. Services keep plain counters; only this module knows Prometheus.
Per-series figures need the database, which a collector cannot await: the /metrics route reads
`store.series_stats()` first and hands the rows over through `SeriesSnapshot`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from market_data.api.read_gate import ReadGate
from market_data.api.view import DaemonView
from market_data.models import SeriesStats
from market_data.storage.health import FULL, READ_ONLY, UNAVAILABLE
from market_data.timeframes import next_open

P = "market_data_"


@dataclass(slots=True)
class SeriesSnapshot:
    """What the route read from the store just before the scrape."""

    rows: list[SeriesStats] = field(default_factory=list)
    database_up: bool = True
    read_ms: int = 0


def _counter(
    name: str,
    doc: str,
    value: float,
    labels: dict[str, str] | None = None,
) -> CounterMetricFamily:
    family = CounterMetricFamily(P + name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


class DaemonCollector(Collector):
    def __init__(self, daemon: DaemonView, read_gate: ReadGate | None = None) -> None:
        self.daemon = daemon
        self.read_gate = read_gate
        self.snapshot = SeriesSnapshot()

    def collect(self) -> Iterator[Metric]:
        yield from self._writes()
        yield from self._rest()
        yield from self._websocket()
        yield from self._gaps()
        yield from self._loops()
        yield from self._cluster()
        yield from self._series()
        yield from self._process()

    def _writes(self) -> Iterator[Metric]:
        sink = self.daemon.sink_stats
        written = CounterMetricFamily(
            P + "candles_written",
            "Candles inserted or changed, by the service that wrote them",
            labels=["source"],
        )
        for source, n in sorted(sink.written_by_source.items()):
            written.add_metric([source], n)
        yield written
        rejected = CounterMetricFamily(
            P + "candles_quarantined",
            "Candles refused (invalid) and kept in quarantine, by source",
            labels=["source"],
        )
        for source, n in sorted(sink.rejected_by_source.items()):
            rejected.add_metric([source], n)
        yield rejected
        yield _counter(
            "derived_candles_written", "Derived candles (4h from 1h) written", sink.derived_written
        )
        timings = self.daemon.upsert_timings
        hist = HistogramMetricFamily(P + "upsert_seconds", "Time to upsert one batch of candles")
        hist.add_metric([], timings.seconds.cumulative(), timings.seconds.sum)
        yield hist
        yield _counter("upsert_errors", "Upserts that raised", timings.errors)

    def _cluster(self) -> Iterator[Metric]:
        st = self.daemon.cluster_state
        alive = sum(1 for m in st.members if m.alive)
        yield _gauge("cluster_members_alive", "Daemons heartbeating on this database", alive)
        yield _gauge("cluster_channels_held", "Live channels this daemon holds", st.held_channels)
        yield _gauge(
            "cluster_channels_expected",
            "This daemon's share of the live channels",
            st.expected_channels,
        )
        yield _gauge(
            "cluster_fenced", "1 while this daemon holds nothing (no heartbeat)", st.fenced
        )

    def _rest(self) -> Iterator[Metric]:
        rest = self.daemon.rest_stats
        requests = CounterMetricFamily(
            P + "rest_requests", "Bitfinex REST requests by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(rest.requests.items()):
            requests.add_metric([outcome], n)
        yield requests
        yield _counter("rest_rows_rejected", "REST rows refused by the parser", rest.rows_rejected)
        lim = self.daemon.limiter_stats
        yield _counter("rate_limited", "Requests answered with 429 / error 11010", lim.rate_limited)
        yield _counter("rate_limit_gave_up", "Requests that ran out of 429 retries", lim.gave_up)
        yield _counter(
            "rate_limiter_wait_seconds",
            "Seconds callers spent waiting on the rate limiter (summed over callers)",
            lim.waited_seconds,
        )
        yield _gauge("rate_limiter_backoff_seconds", "Current 429 backoff", lim.current_backoff)
        yield _gauge(
            "rate_limiter_penalty_seconds",
            "Seconds until requests may start again",
            self.daemon.rate_limit_penalty_seconds(),
        )

    def _websocket(self) -> Iterator[Metric]:
        st = self.daemon.ws_state
        conns = st.connections if st is not None else []
        states = GaugeMetricFamily(
            P + "ws_connections", "WebSocket connections by state", labels=["state"]
        )
        for name in ("connecting", "subscribed", "paused", "backoff", "closed"):
            states.add_metric([name], sum(1 for c in conns if c.state == name))
        yield states
        yield _counter("ws_reconnects", "WebSocket reconnections", sum(c.reconnects for c in conns))
        yield _counter("ws_messages", "WebSocket messages received", sum(c.messages for c in conns))
        if st is None:
            return
        yield _gauge("ws_queue_depth", "Frames waiting in the WebSocket queue", st.queue_depth)
        yield _gauge("ws_queue_bound", "Capacity of the WebSocket queue", st.queue_bound)
        yield _gauge(
            "ws_pending_rows", "Candles buffered by the writer, not yet committed", st.pending
        )
        yield _gauge(
            "ws_subscriptions",
            "Channels subscribed",
            sum(len(c.subscriptions) for c in conns if c.state == "subscribed"),
        )
        yield _counter("ws_flushes", "WebSocket batches written", st.writer.flushes)
        yield _counter(
            "ws_dropped_rows",
            "WebSocket candles lost (refused or forced stop)",
            st.writer.dropped_rows,
        )
        yield _gauge(
            "ws_database_outage",
            "1 while the writer cannot reach the database",
            1.0 if st.db_outage else 0.0,
        )
        yield from self._final_check()
        commit = st.writer.commit_seconds
        hist = HistogramMetricFamily(
            P + "ws_update_to_commit_seconds",
            "Time from receiving a WebSocket candle update to committing it",
        )
        hist.add_metric([], commit.cumulative(), commit.sum)
        yield hist

    def _final_check(self) -> Iterator[Metric]:
        st = self.daemon.ws_state
        if st is None:
            return
        check = st.final_check
        yield _gauge(
            "ws_unchecked_final_oldest_age_seconds",
            "How long the oldest candle "
            "finalized from the stream and not yet checked against REST has been "
            "closed: the longest a wrong final candle can have been visible",
            st.unchecked_final_oldest_age_seconds,
        )
        yield _gauge(
            "ws_unchecked_final_series",
            "Series with final candles not yet checked against REST",
            st.unchecked_final_series,
        )
        yield _counter(
            "ws_final_checks",
            "REST pages asked for to check final candles (one covers a range of a series)",
            check.checks,
        )
        yield _counter(
            "ws_final_candles_checked", "Final candles compared with REST", check.candles_checked
        )
        yield _counter(
            "ws_final_corrections",
            "Final candles that differed from REST and were rewritten",
            check.corrections,
        )
        yield _counter(
            "ws_final_check_failures", "Checks against REST that failed (retried)", check.failures
        )
        yield _gauge(
            "ws_unconfirmed_periods",
            "Closed periods the stream saw (traded or not) still to be confirmed against REST",
            check.pending_periods,
        )
        yield _counter(
            "ws_confirmations",
            "REST pages asked for to confirm series with only no-trade periods pending",
            check.confirmations,
        )
        yield _counter(
            "ws_confirmed_empty_periods",
            "Periods the checks against REST recorded empty (no trades)",
            check.empty_periods,
        )

    def _gaps(self) -> Iterator[Metric]:
        g = self.daemon.gap_stats
        if g.open_gaps is not None:
            yield _gauge(
                "gaps_open", "Gaps still open (as of the last detection or repair)", g.open_gaps
            )
        yield _counter("gaps_detected", "Gaps detected", g.gaps_detected)
        yield _counter("gaps_repaired", "Gaps repaired with candles", g.gaps_repaired)
        yield _counter("gaps_empty", "Gaps closed as empty (no trades then)", g.gaps_empty)
        yield _counter("gap_repair_failures", "Gap repair attempts that failed", g.repair_failures)
        yield _counter(
            "gap_repair_requests",
            "Exchange requests made by gap repair (what GAP_REPAIR_MAX_REPAIRS_PER_RUN counts)",
            g.repair_requests,
        )
        yield _counter(
            "candles_deleted",
            "Candles deleted by retention",
            self.daemon.retention_stats.deleted_total,
        )

    def _loops(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(P + "loop_runs", "Cycles run per loop", labels=["loop"])
        fails = CounterMetricFamily(P + "loop_failures", "Failed cycles per loop", labels=["loop"])
        streak = GaugeMetricFamily(
            P + "loop_consecutive_failures", "Failures in a row", labels=["loop"]
        )
        success = GaugeMetricFamily(
            P + "loop_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            labels=["loop"],
        )
        for s in self.daemon.loop_statuses:
            runs.add_metric([s.name], s.runs)
            fails.add_metric([s.name], s.failures)
            streak.add_metric([s.name], s.consecutive_failures)
            if s.last_success_ms is not None:
                success.add_metric([s.name], s.last_success_ms / 1000)
        yield from (runs, fails, streak, success)

    def _series(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield _gauge(
            "database_up",
            "1 when the last read of the database worked",
            1.0 if snap.database_up else 0.0,
        )
        lag = GaugeMetricFamily(
            P + "series_lag_seconds",
            "Seconds between now and the end of the newest stored candle's period",
            labels=["symbol", "timeframe"],
        )
        count = GaugeMetricFamily(
            P + "series_candles", "Candles stored per series", labels=["symbol", "timeframe"]
        )
        for row in snap.rows:
            labels = [row.symbol, row.timeframe]
            count.add_metric(labels, row.candle_count)
            if row.last_ts is not None:
                end = next_open(row.last_ts, row.timeframe)
                lag.add_metric(labels, max(0.0, (snap.read_ms - end) / 1000))
        yield from (lag, count)
        progress = GaugeMetricFamily(
            P + "backfill_progress_ratio",
            "Backfill progress, 0 to 1",
            labels=["symbol", "timeframe"],
        )
        for p in list(self.daemon.backfill_progress.values()):
            progress.add_metric([p.symbol, p.timeframe], p.fraction)
        yield progress

    def _process(self) -> Iterator[Metric]:
        state = self.daemon.state
        yield _gauge(
            "uptime_seconds",
            "Seconds since the daemon started",
            max(0.0, time.time() - state.started_at_ms / 1000),
        )
        yield _gauge(
            "database_migrated", "1 once migrations ran", 1.0 if state.database_ready else 0.0
        )
        # The write side, from the daemon's own writes: a read-only or full database still
        # answers reads (database_up stays 1).
        writes = self.daemon.store.write_health
        failing = GaugeMetricFamily(
            P + "database_writes_failing",
            "1 while the latest write failed, by reason (read-only, full, unavailable)",
            labels=["fault"],
        )
        for fault in (READ_ONLY, FULL, UNAVAILABLE):
            failing.add_metric([fault], 1.0 if writes.fault == fault else 0.0)
        yield failing
        if self.read_gate is not None:
            yield _counter(
                "api_reads_refused",
                "API reads answered 503 + Retry-After: every read slot taken and the line full",
                self.read_gate.stats.refused,
            )


def build_registry(
    daemon: DaemonView, read_gate: ReadGate | None = None
) -> tuple[CollectorRegistry, DaemonCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = DaemonCollector(daemon, read_gate)
    registry.register(collector)
    return registry, collector
