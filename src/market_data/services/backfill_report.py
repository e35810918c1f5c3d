"""What a backfill reports: progress per series while it runs (for /status and the CLI's
progress bar), a result per series and the run's report; and the order series are fetched in."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from market_data.models import JobStatus, SeriesKey
from market_data.timeframes import is_native, source_of

log = logging.getLogger("market_data.services.backfill")


@dataclass(slots=True)
class SeriesProgress:
    """Live state of one series, for the CLI's progress bars and /status."""

    symbol: str
    timeframe: str
    # pending (not started, or waiting for its next stage), running, success, failed,
    # cancelled, skipped
    state: str = "pending"
    candles: int = 0  # rows written (changed or new)
    fetched: int = 0  # rows received from the exchange
    rejected: int = 0  # rows refused by the parser or the store
    requests: int = 0
    rate_limit_waits: int = 0
    total_ms: int = 0  # time span to walk
    done_ms: int = 0  # time span walked so far
    started: float | None = None  # monotonic
    finished: float | None = None
    error: str | None = None
    exchange_outage: bool = False  # the error says the exchange cannot be reached

    @property
    def fraction(self) -> float:
        if self.state in (JobStatus.SUCCESS, "skipped"):
            return 1.0
        return min(1.0, self.done_ms / self.total_ms) if self.total_ms else 0.0

    def eta_seconds(self, now: float | None = None) -> float | None:
        if self.started is None or self.finished is not None or self.done_ms <= 0:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.started
        return elapsed * max(0, self.total_ms - self.done_ms) / self.done_ms


@dataclass(frozen=True, slots=True)
class SeriesResult:
    symbol: str
    timeframe: str
    status: str  # success, failed, cancelled, skipped
    candles: int
    requests: int
    rejected: int
    error: str | None = None
    exchange_outage: bool = False  # the error says the exchange cannot be reached


@dataclass(slots=True)
class BackfillReport:
    results: list[SeriesResult] = field(default_factory=list)
    unknown_symbols: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def failed(self) -> list[SeriesResult]:
        return [r for r in self.results if r.status == JobStatus.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unknown_symbols and not self.cancelled

    @property
    def candles(self) -> int:
        return sum(r.candles for r in self.results)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)


def order_series(series: Sequence[SeriesKey]) -> tuple[list[SeriesKey], list[SeriesKey]]:
    """(native series to fetch, sources of derived ones first; derived series to rebuild)."""
    derived = list(dict.fromkeys(k for k in series if not is_native(k.timeframe)))
    sources = {SeriesKey(k.symbol, source_of(k.timeframe)) for k in derived}
    natives = list(
        dict.fromkeys(
            [k for k in series if is_native(k.timeframe)]
            + [SeriesKey(k.symbol, source_of(k.timeframe)) for k in derived]
        )
    )
    natives.sort(key=lambda k: k not in sources)  # stable: configured order otherwise
    return natives, derived


def build_report(
    progress: Mapping[SeriesKey, SeriesProgress],
    ordered: Sequence[SeriesKey],
    natives: Sequence[SeriesKey],
    ran: set[SeriesKey],
    cancelled: bool,
) -> BackfillReport:
    """The run's report: one result per series that ran, whatever the number of stages it ran
    in; series still waiting for a stage end `success` (`cancelled` if the run stopped)."""
    report = BackfillReport(cancelled=cancelled)
    for key in ordered:
        prog = progress[key]
        if prog.state == "pending":
            # Not started, or waiting for a stage the run did not reach.
            ok = key in ran and not cancelled
            prog.state = JobStatus.SUCCESS if ok else JobStatus.CANCELLED
            prog.finished = prog.finished or (time.monotonic() if key in ran else None)
        if prog.state == "skipped" and key.symbol not in report.unknown_symbols:
            report.unknown_symbols.append(key.symbol)
        if (key in natives and key not in ran) or prog.started is None:
            continue
        report.results.append(
            SeriesResult(
                key.symbol,
                key.timeframe,
                prog.state,
                prog.candles,
                prog.requests,
                prog.rejected,
                prog.error,
                prog.exchange_outage,
            )
        )
    log.info(
        "Backfill %s: %d candles in %d requests, %d series failed",
        "cancelled" if report.cancelled else "complete",
        report.candles,
        report.requests,
        len(report.failed),
    )
    return report
