"""The store's interfaces, by purpose: candles, jobs, gaps and empty ranges, per-series state,
the dashboard's coverage reads, and the database's own lifecycle. `Store` is all of them: what
the daemon holds and hands to the services; a part that needs less can ask for less. One SQL
implementation (`sql.py`) serves SQLite and PostgreSQL. Times are epoch ms UTC throughout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # numpy is imported by the bulk readers, not with the interface
    import numpy as np
    import numpy.typing as npt

from market_data.models import Candle, Gap, Job, SeriesKey, SeriesStats
from market_data.storage.health import WriteHealth

# Rows per chunk of `candle_columns` (the export's keyset page) and its bound.
COLUMN_CHUNK_ROWS = 50_000
MAX_COLUMN_CHUNK_ROWS = 200_000
MAX_TIME_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z: no candle opens after it


@dataclass(frozen=True, slots=True)
class Rejected:
    """A candle the store refused, and why (it was not stored)."""

    candle: Candle
    reason: str


@dataclass(slots=True)
class UpsertResult:
    written: int = 0  # rows inserted or changed
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    """A row refused on the way in (by a parser or the store), kept for inspection."""

    source: str  # backfill, ws, gap_repair, update, store...
    symbol: str | None
    timeframe: str | None
    ts: int | None
    raw: str  # the row as received (truncated when stored)
    reason: str


@dataclass(frozen=True, slots=True)
class CoverageRecords:
    """What is recorded about one series, for drawing its coverage (`coverage_records`)."""

    first_ts: int | None  # first and last stored candle, candle count (series_stats)
    last_ts: int | None
    candle_count: int
    detect_low: int | None  # gap detection has checked [detect_low, watermark] (series_state)
    watermark: int | None
    gaps: list[tuple[int, int, str]]  # (gap_start, gap_end, status) overlapping the window
    empty: list[tuple[int, int]]  # known-empty [start, end) ranges overlapping the window
    # When there were more gap rows or empty ranges than a listing returns, the lists are
    # complete only before this time.
    complete_until: int | None = None


@dataclass(frozen=True, slots=True)
class CandleColumns:
    """One chunk of one series' candles as columns, ascending by ts: no object per row, so
    exports and streamed answers convert whole chunks at C speed. `ts` is epoch ms (int64),
    prices and volume float64, `final` bool; all arrays have the same length."""

    symbol: str
    timeframe: str
    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    final: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One daemon of a cluster as its row says (times on the database's clock)."""

    id: str
    started_at: int
    heartbeat_at: int
    pid: int | None
    host: str | None
    channels: int  # channel leases it held at its latest heartbeat
    jobs: int  # jobs it had running then


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a heartbeat found: the database's time, and the leases this member now holds."""

    now: int
    held: frozenset[tuple[str, str]]  # (kind, name)


class StoreLifecycle(Protocol):
    async def upgrade(self) -> None:
        """Create or migrate the schema (Alembic, to head)."""

    async def ping(self) -> None:
        """Raise StorageUnavailable when the database cannot be read (a fresh connection)."""

    async def checkpoint(self) -> None:
        """Fold a write-ahead log into the database (SQLite; a no-op where there is none). The
        daemon calls it every few seconds on SQLite, whose automatic checkpoints are off."""

    async def close(self) -> None: ...

    @property
    def write_health(self) -> WriteHealth:
        """The outcome of the latest writes (a read-only or full database answers pings)."""

    def reader(self, pool_size: int) -> Store:
        """The same store with reads on a pool of their own, closed with this one."""


class CandleStore(Protocol):
    async def upsert_candles(self, candles: Sequence[Candle]) -> UpsertResult:
        """Insert or update by (exchange, symbol, timeframe, ts), idempotent.

        Picks the bulk path for large batches (backfill pages up to 10,000 rows) and the
        low-latency path for small ones (WebSocket flushes of ~200). Invalid candles are
        rejected (listed in the result, never stored); the valid rows of the batch still land.
        Within a batch the last row for a key wins. A stored final candle is never replaced by
        a non-final one; a final one replaces it only when values differ.
        """

    async def first_candle(self, series: SeriesKey) -> Candle | None: ...

    async def last_candle(
        self, series: SeriesKey, *, final_only: bool = False
    ) -> Candle | None: ...

    async def candles_in_range(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> list[Candle]:
        """Candles with start_ms <= ts < end_ms, ascending, at most `limit`."""

    async def candles_json(
        self, series: SeriesKey, start_ms: int, end_ms: int, limit: int = 10_000
    ) -> tuple[str, int, int | None] | None:
        """The rows of `candles_in_range` as JSON objects joined by commas (ts as ISO 8601 UTC),
        their count and the last row's ts (where the next page starts), when the database builds
        the text faster than Python would (PostgreSQL); None otherwise, and the caller reads
        `candles_in_range` instead."""

    def candle_columns(
        self,
        series: SeriesKey,
        start_ms: int,
        end_ms: int,
        *,
        chunk_rows: int = COLUMN_CHUNK_ROWS,
        limit: int | None = None,
    ) -> AsyncIterator[CandleColumns]:
        """Candles with start_ms <= ts < end_ms, ascending, as column chunks of at most
        `chunk_rows` (clamped to 1..MAX_COLUMN_CHUNK_ROWS), at most `limit` rows in all (None:
        every row). Keyset pagination over ts, one query per chunk and no connection held
        between chunks, so memory stays flat however long the range is."""

    async def open_times_in_range(self, series: SeriesKey, start_ms: int, end_ms: int) -> list[int]:
        """Stored open times with start_ms <= ts < end_ms, ascending."""

    async def delete_candles_before(
        self, series: SeriesKey, cutoff_ms: int, batch_size: int = 10_000
    ) -> int:
        """Delete candles with ts < cutoff_ms in bounded batches (each its own transaction)."""

    async def series_stats(self) -> list[SeriesStats]:
        """Per-series count, first and last ts, from a maintained table (O(series), not O(rows))."""

    async def quarantine(self, items: Sequence[QuarantineItem]) -> None:
        """Keep refused rows in `rejected_candles` (bounded: the newest 100,000 stay)."""


class JobStore(Protocol):
    async def create_job(
        self, job_type: str, symbol: str | None = None, timeframe: str | None = None
    ) -> int: ...

    async def finish_job(
        self, job_id: int, status: str, candles_fetched: int = 0, last_error: str | None = None
    ) -> None: ...

    async def update_job_progress(self, job_id: int, candles_fetched: int) -> None: ...

    async def list_jobs(
        self,
        *,
        limit: int = 20,
        job_type: str | None = None,
        status: str | None = None,
        symbol: str | None = None,
    ) -> list[Job]:
        """Newest first."""

    async def fail_running_jobs(
        self, reason: str, status: str = "failed", *, owner: str | None = None
    ) -> int:
        """Mark every job still `running` (left by a killed process, or at shutdown), or only
        `owner`'s."""


class ClusterStore(Protocol):
    """Several daemons on one database: members, leases and claimed work. Every time is judged
    by the database's clock (PostgreSQL's `clock_timestamp()`), so the members' clocks may
    differ; `ttl_ms` is how long a heartbeat, a lease or a claim stays valid."""

    async def heartbeat_member(
        self, member_id: str, *, pid: int, host: str, ttl_ms: int
    ) -> Heartbeat:
        """Upsert the member's row (heartbeat now), renew its leases and claimed work for
        `ttl_ms`, record its channel and running job counts, and drop what expired long ago."""

    async def leave_cluster(self, member_id: str) -> None:
        """Delete the member's row and give up its leases and claims (a clean stop)."""

    async def list_members(self) -> tuple[int, list[MemberRecord]]:
        """The database's time now and every member's row."""

    async def take_leases(
        self, kind: str, names: Sequence[str], owner: str, ttl_ms: int
    ) -> set[str]:
        """Take or renew the named leases: those free, expired or already `owner`'s; the names
        now held. A lease another owner holds is never taken before it expires."""

    async def release_leases(self, kind: str, names: Sequence[str], owner: str) -> None: ...

    async def lease_holders(self, kind: str) -> dict[str, tuple[str, int]]:
        """name -> (owner, expires_at) of the unexpired leases of `kind`."""

    async def claim_work(
        self, kind: str, keys: Sequence[str], owner: str, ttl_ms: int, limit: int
    ) -> list[str]:
        """Claim up to `limit` of `keys` that nobody holds (never claimed, or the claim expired,
        or done long enough ago); the keys claimed, each by exactly one caller however many
        claim at once."""

    async def finish_work(self, kind: str, key: str, owner: str, keep_ms: int) -> None:
        """Mark an item done; it is not claimable again for `keep_ms`."""

    async def work_done(self, kind: str, keys: Sequence[str]) -> set[str]:
        """Those of `keys` marked done and still within their `keep_ms`."""

    async def release_work(self, kind: str, key: str, owner: str) -> None:
        """Give an item back unfinished (claimable at once)."""

    async def fail_member_jobs(
        self,
        ttl_ms: int,
        *,
        also: str | None = None,
        unowned: bool = False,
        every_member: bool = False,
    ) -> dict[str, int]:
        """Close as `failed` the jobs left `running` by members without a heartbeat for
        `ttl_ms` (with `every_member`, by any member: the caller knows they are all gone), by
        `also` (a previous instance of this member), and with `unowned` by no member at all (a
        process that never joined); the reason names the owner. Jobs closed by owner."""


class GapStore(Protocol):
    async def find_missing_ranges_many(
        self, queries: Sequence[tuple[SeriesKey, int, int, int]]
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """Holes between stored candles, computed in SQL, for (series, start, end, step)
        queries: series -> holes, ascending. A hole is (gap_start, gap_end) with gap_start =
        previous ts + step and gap_end = the next stored ts, among stored ts in [start, end].
        Only for fixed-length timeframes."""

    async def create_gaps_many(
        self, ranges: Mapping[SeriesKey, Sequence[tuple[int, int]]]
    ) -> list[Gap]:
        """Record new gaps in one transaction; a range already recorded for the series (open or
        closed) is skipped, as is an empty one. The gaps created, by series and start."""

    async def list_gaps(
        self,
        *,
        repaired: bool | None = None,
        status: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        limit: int = 100,
        due_before_ms: int | None = None,
        oldest_first: bool = False,
        within: tuple[int, int] | None = None,
    ) -> list[Gap]:
        """Newest first (by gap_start), or oldest first. `repaired=False` means still open or
        failed. `due_before_ms` keeps gaps whose next_attempt_at is unset or <= it; `within`
        ([start, end)) keeps gaps lying wholly inside it."""

    async def close_gap(self, gap_id: int, status: str, candles_repaired: int, now_ms: int) -> None:
        """Close as 'repaired' or 'empty' (repaired_at = now)."""

    async def record_gap_failure(
        self, gap_id: int, error: str, next_attempt_at_ms: int, failed: bool
    ) -> None:
        """Count an attempt; `failed` moves it to the slow retry cadence."""

    async def count_open_gaps(self) -> int: ...

    async def delete_gaps_before(self, series: SeriesKey, cutoff_ms: int) -> int:
        """Drop gap rows that ended before the retention cut-off."""

    # known-empty ranges: what the exchange answered with no candles ------------------------------
    async def add_empty_ranges(self, series: SeriesKey, ranges: Sequence[tuple[int, int]]) -> None:
        """Record [start, end) ranges the exchange answered with no candles (no trades)."""

    async def empty_ranges(
        self, series: SeriesKey, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]: ...

    async def empty_ranges_many(
        self, windows: Mapping[SeriesKey, tuple[int, int]]
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """`empty_ranges` for many series (series -> [start, end) window)."""


class SeriesStateStore(Protocol):
    """Where gap detection has looked, and what retention purged, per series."""

    async def scan_states(self) -> dict[SeriesKey, tuple[int | None, int | None, int | None]]:
        """Every series' (detect_low, watermark, retention horizon): gap detection has checked
        the series from detect_low up to the watermark."""

    async def set_scan_states(self, states: Mapping[SeriesKey, tuple[int, int]]) -> None:
        """Record (detect_low, watermark) for many series at once."""

    async def get_retention_horizon(self, series: SeriesKey) -> int | None:
        """Retention purged everything before this ts: nobody fetches before it again."""

    async def set_retention_horizon(self, series: SeriesKey, ts_ms: int) -> None: ...


class CoverageStore(Protocol):
    """What the dashboard draws a series' coverage from, without reading candles."""

    async def coverage_records(
        self, series: SeriesKey, start_ms: int, end_ms: int
    ) -> CoverageRecords:
        """The series' stats, checked range, and the gap rows and empty ranges overlapping
        [start_ms, end_ms) (each list bounded), for composing its coverage without reading
        candles."""

    async def empty_spans(self) -> dict[SeriesKey, int]:
        """Per series, milliseconds of recorded empty ranges between its first and last candle."""


class Store(
    StoreLifecycle,
    CandleStore,
    JobStore,
    GapStore,
    SeriesStateStore,
    CoverageStore,
    ClusterStore,
    Protocol,
):
    """Every purpose at once: what the daemon holds, and what `sql.SqlStore` implements."""
