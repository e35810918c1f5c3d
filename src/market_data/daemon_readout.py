"""What the faces read of the daemon (`api.view.DaemonView`): read-only views of its parts,
kept apart from how the daemon builds and runs them."""

from __future__ import annotations

from collections.abc import Mapping

from market_data.daemon_cluster import ClusterDuty
from market_data.exchanges.bitfinex import BitfinexRest, RestStats
from market_data.models import SeriesKey
from market_data.rate_limiter import LimiterStats, RateLimiter
from market_data.scheduler import LoopStatus, PeriodicLoop
from market_data.services.backfill import BackfillPlan, BackfillService, SeriesProgress
from market_data.services.cluster import ClusterState
from market_data.services.gap_repair import GapService, GapStats
from market_data.services.live.ingestion import WsIngestion, WsIngestionState
from market_data.services.retention import RetentionService, RetentionStats
from market_data.services.sink import CandleSink, SinkStats
from market_data.timing import UpsertTimings


class DaemonReadout:
    """Mixed into `Daemon`, which sets these parts."""

    loops: dict[str, PeriodicLoop]
    ws: WsIngestion | None
    backfill: BackfillService
    sink: CandleSink
    timings: UpsertTimings
    rest: BitfinexRest
    limiter: RateLimiter
    cluster: ClusterDuty
    gaps: GapService
    retention: RetentionService

    @property
    def loop_statuses(self) -> list[LoopStatus]:
        return [loop.status for loop in self.loops.values()]

    @property
    def ws_state(self) -> WsIngestionState | None:
        return None if self.ws is None else self.ws.state

    @property
    def backfill_progress(self) -> Mapping[SeriesKey, SeriesProgress]:
        return self.backfill.progress

    @property
    def backfill_plan(self) -> BackfillPlan:
        return self.backfill.plan_state

    @property
    def sink_stats(self) -> SinkStats:
        return self.sink.stats

    @property
    def upsert_timings(self) -> UpsertTimings:
        return self.timings

    @property
    def rest_stats(self) -> RestStats:
        return self.rest.stats

    @property
    def limiter_stats(self) -> LimiterStats:
        return self.limiter.stats

    def rate_limit_penalty_seconds(self) -> float:
        return self.limiter.penalty_remaining()

    @property
    def cluster_state(self) -> ClusterState:
        return self.cluster.state

    def cluster_share(self) -> tuple[bool, str]:
        return self.cluster.member.share_check()

    @property
    def gap_stats(self) -> GapStats:
        return self.gaps.stats

    @property
    def retention_stats(self) -> RetentionStats:
        return self.retention.stats
