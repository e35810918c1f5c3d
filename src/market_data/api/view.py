"""What the HTTP API reads from the daemon, and the two things it may ask of it.

The API depends on this Protocol, never on the `Daemon` class: `daemon.Daemon` implements it
(structurally), and tests may hand `create_app` anything else that does. Everything here is read
at request time; the objects returned are the parts' own live counters, not copies, and the API
only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from market_data.config import Settings
    from market_data.daemon_state import RuntimeState
    from market_data.exchanges.bitfinex.rest import RestStats
    from market_data.models import SeriesKey
    from market_data.rate_limiter import LimiterStats
    from market_data.scheduler import LoopStatus
    from market_data.services.backfill import BackfillPlan, SeriesProgress
    from market_data.services.cluster import ClusterState
    from market_data.services.gap_repair import GapStats
    from market_data.services.live.ingestion import WsIngestionState
    from market_data.services.retention import RetentionStats
    from market_data.services.sink import SinkStats
    from market_data.services.universe import SeriesUniverse
    from market_data.storage.base import Store
    from market_data.timing import UpsertTimings


class DaemonView(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def universe(self) -> SeriesUniverse:
        """The active and delisted series (BITFINEX_SYMBOLS names, or patterns resolved)."""

    @property
    def state(self) -> RuntimeState:
        """Phase, database readiness, backfill state, crash reason."""

    @property
    def store(self) -> Store:
        """The daemon's store, for the read endpoints (and /health's ping)."""

    @property
    def cluster_state(self) -> ClusterState:
        """This member and the others sharing the database (a cluster of one on SQLite)."""

    def cluster_share(self) -> tuple[bool, str]:
        """Whether this member holds its share of the live channels, and why not."""

    @property
    def loop_statuses(self) -> Sequence[LoopStatus]:
        """Each periodic loop's last and next run."""

    @property
    def ws_state(self) -> WsIngestionState | None:
        """The WebSocket ingestion's connections and queue; None when it is disabled."""

    @property
    def backfill_progress(self) -> Mapping[SeriesKey, SeriesProgress]:
        """The current (or last) backfill's progress per series."""

    @property
    def backfill_plan(self) -> BackfillPlan:
        """The current (or last) backfill's stages and requests left."""

    @property
    def sink_stats(self) -> SinkStats: ...

    @property
    def upsert_timings(self) -> UpsertTimings: ...

    @property
    def rest_stats(self) -> RestStats: ...

    @property
    def limiter_stats(self) -> LimiterStats: ...

    def rate_limit_penalty_seconds(self) -> float:
        """Seconds until REST requests may start again (0 outside a 429 penalty)."""

    @property
    def gap_stats(self) -> GapStats: ...

    @property
    def retention_stats(self) -> RetentionStats: ...

    def trigger_backfill(self, series: list[SeriesKey] | None, days: float | None) -> str:
        """Start a backfill in the background; the task's name. Raises DaemonBusy,
        DaemonNotRunning (errors.py)."""

    def trigger_gap_repair(self, max_repairs: int | None) -> str:
        """Start a gap repair in the background; the task's name. Raises DaemonBusy,
        DaemonNotRunning (errors.py)."""
