"""Response models: what the API returns, as documented in OpenAPI at /docs.

Times are ISO 8601 UTC strings (`2026-02-05T20:00:00Z`); durations are seconds.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from market_data.models import Gap, Job
from market_data.timeframes import format_ts


def iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else _iso(ts_ms)


# /status formats three times per series, mostly the same few minutes: strftime was a sixth of it.
@lru_cache(maxsize=4096)
def _iso(ts_ms: int) -> str:
    return format_ts(ts_ms)


class CheckOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    detail: str


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, CheckOut]


class SeriesOut(BaseModel):
    symbol: str
    timeframe: str
    derived: bool = Field(description="aggregated from a native timeframe, not fetched")
    configured: bool
    state: Literal["active", "delisted"] = Field(
        "active",
        description="delisted: the exchange no longer lists the pair; kept, no longer fetched",
    )
    candle_count: int
    first_candle: str | None
    last_candle: str | None
    last_closed_candle: str | None
    lag_seconds: float | None = Field(
        description="seconds between now and the end of the newest stored candle's period"
    )
    open_gaps: int
    expected_candles: int | None = Field(
        None, description="periods from the first to the newest stored candle"
    )
    empty_candles: int = Field(
        0, description="periods in that span the exchange proved empty (no trades)"
    )
    completeness: float | None = Field(
        None, description="(stored + proven empty) / expected periods, 0..1"
    )


class LoopOut(BaseModel):
    name: str
    interval_seconds: float
    running: bool
    runs: int
    failures: int
    consecutive_failures: int
    last_start: str | None
    last_finish: str | None
    last_success: str | None
    last_duration_seconds: float | None
    last_result: str | None
    last_error: str | None
    last_error_at: str | None
    next_run: str | None


class WebSocketOut(BaseModel):
    enabled: bool
    connections: int
    subscriptions: int
    queue_depth: int | None
    details: dict[str, object] = Field(default_factory=dict)


class RateLimiterOut(BaseModel):
    delay_seconds: float = Field(description="RATE_LIMIT_DELAY: spacing between request starts")
    requests: int = Field(description="request starts granted")
    rate_limited: int = Field(description="calls the exchange answered with 429")
    gave_up: int = Field(description="calls that ran out of retries")
    waited_seconds: float = Field(description="time callers spent waiting, summed")
    current_backoff_seconds: float
    penalty_seconds_left: float = Field(description="the penalty box after a 429; 0 when out")
    waiting: dict[str, int] = Field(description="callers waiting now, by priority")
    rest_outcomes: dict[str, int] = Field(description="REST requests by outcome")


class BackfillStageOut(BaseModel):
    name: Literal["day", "week", "deep"]
    series: int = Field(description="series with something to fetch in this stage")
    requests: int = Field(description="estimated requests (done and left), revised per stage")
    requests_done: int


class BackfillPlanOut(BaseModel):
    """Recent first, then deep: every series' last day, then its last week, then the rest."""

    stage: Literal["day", "week", "deep", "done"]
    stages: list[BackfillStageOut]
    requests_left: int
    eta_seconds: float = Field(
        description="requests left x RATE_LIMIT_DELAY; the limiter is shared with live work "
        "and 429s add waits, so this is a lower bound"
    )


class BackfillOut(BaseModel):
    state: str
    series: list[dict[str, object]]
    plan: BackfillPlanOut


class MemberOut(BaseModel):
    id: str
    heartbeat: str = Field(description="its latest heartbeat, on the database's clock")
    channels: int = Field(description="live channels it held then")
    jobs: int = Field(description="jobs it had running then")
    alive: bool = Field(description="heartbeat within LEASE_TTL_SECONDS")


class ClusterOut(BaseModel):
    """The daemons sharing this database (one on SQLite)."""

    model_config = ConfigDict(populate_by_name=True)

    self_id: str = Field(alias="self", description="this daemon's DAEMON_ID")
    members: list[MemberOut]
    expected_channels: int = Field(description="this member's share of the live channels")
    held_channels: int
    fenced: bool = Field(description="no heartbeat within a TTL: it holds nothing")


class StatusOut(BaseModel):
    now: str
    started_at: str
    uptime_seconds: float
    database: Literal["sqlite", "postgresql"] = Field(description="the database backend")
    database_reachable: bool
    open_gaps: int
    unknown_symbols: list[str]
    series: list[SeriesOut]
    websocket: WebSocketOut
    loops: list[LoopOut]
    backfill: BackfillOut
    written_by_source: dict[str, int]
    rate_limiter: RateLimiterOut | None = None
    cluster: ClusterOut | None = None


class GapOut(BaseModel):
    id: int
    exchange: str
    symbol: str
    timeframe: str
    gap_start: str
    gap_end: str
    missing_candles: int | None
    status: str
    detected_at: str
    repaired_at: str | None
    candles_repaired: int
    attempts: int
    next_attempt_at: str | None
    last_error: str | None

    @classmethod
    def of(cls, gap: Gap, missing: int | None) -> GapOut:
        return cls(
            id=gap.id,
            exchange=gap.exchange,
            symbol=gap.symbol,
            timeframe=gap.timeframe,
            gap_start=format_ts(gap.gap_start),
            gap_end=format_ts(gap.gap_end),
            missing_candles=missing,
            status=gap.status,
            detected_at=format_ts(gap.detected_at),
            repaired_at=iso(gap.repaired_at),
            candles_repaired=gap.candles_repaired,
            attempts=gap.attempts,
            next_attempt_at=iso(gap.next_attempt_at),
            last_error=gap.last_error,
        )


class GapsOut(BaseModel):
    count: int
    gaps: list[GapOut]


class JobOut(BaseModel):
    id: int
    exchange: str
    symbol: str | None
    timeframe: str | None
    job_type: str
    status: str
    started_at: str
    completed_at: str | None
    duration_seconds: float | None
    candles_fetched: int
    last_error: str | None
    owner: str | None = Field(None, description="the DAEMON_ID that ran it")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        duration = None
        if job.completed_at is not None:
            duration = round((job.completed_at - job.started_at) / 1000, 3)
        return cls(
            id=job.id,
            exchange=job.exchange,
            symbol=job.symbol,
            timeframe=job.timeframe,
            job_type=job.job_type,
            status=job.status,
            started_at=format_ts(job.started_at),
            completed_at=iso(job.completed_at),
            duration_seconds=duration,
            candles_fetched=job.candles_fetched,
            last_error=job.last_error,
            owner=job.owner,
        )


class JobsOut(BaseModel):
    count: int
    jobs: list[JobOut]


class CandleOut(BaseModel):
    ts: str = Field(description="open time of the period, ISO 8601 UTC")
    open: float
    high: float
    low: float
    close: float
    volume: float
    final: bool = Field(description="false while the period is still open and may change")


class CandlesOut(BaseModel):
    symbol: str
    timeframe: str
    start: str
    end: str
    count: int
    candles: list[CandleOut]


class AcceptedOut(BaseModel):
    accepted: bool
    task: str
    detail: str


class ErrorOut(BaseModel):
    detail: str


class CoverageRunOut(BaseModel):
    start: str = Field(description="first period of the run, ISO 8601 UTC")
    end: str = Field(description="end of the run (exclusive), ISO 8601 UTC")
    state: Literal["stored", "empty", "gap", "failed", "unknown"] = Field(
        description="stored; empty: the exchange had no trades (proven); gap: recorded, not yet"
        " repaired; failed: repairs keep failing; unknown: never fetched or not checked yet"
    )


class CoverageOut(BaseModel):
    symbol: str
    timeframe: str
    start: str
    end: str
    truncated: bool = Field(
        description="too many gap rows or empty ranges: the runs stop at `end`; ask from there"
    )
    runs: list[CoverageRunOut]
