"""The backfill's plan: recent history first, then deep.

A backfill's range is cut into stages by depth, anchored at its end: "day" is the last day,
"week" the six days before it, "deep" everything older. Every series walks its "day" stage before
any series starts its "week" one, and so on, so with hundreds of series the database holds every
series' recent history within minutes instead of after hours of deep history for the first few.

The plan is an explicit list of work items: one per series and stage, holding the windows still
to fetch there (what the store already knows or the exchange answered empty is left out) and an
estimate of the requests they take. Items are independent of one another within a stage; walking
an item's windows is all executing it means, so several workers could share them out. Memory is
bounded by series x stages, never by pages.

Pure: no I/O. The service reads the store and hands the known windows in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from market_data.models import SeriesKey
from market_data.ranges import Range
from market_data.timeframes import DAY_MS, WEEK_MS, align, nominal_ms

# (name, how far back from the end the stage reaches; None: down to the start)
STAGES: tuple[tuple[str, int | None], ...] = (("day", DAY_MS), ("week", WEEK_MS), ("deep", None))
DONE = "done"


def stage_bounds(
    start: int, end: int, timeframes: Iterable[str] = ()
) -> list[tuple[str, int, int]]:
    """The stages of [start, end), newest first, as (name, lo, hi); stages that would be empty
    (BACKFILL_DAYS <= 7, a short manual range) are left out. A boundary is aligned down to the
    coarsest of `timeframes` (a source and the series derived from it), so no period is split
    between two stages."""
    tfs = list(timeframes)
    bounds: list[tuple[str, int, int]] = []
    hi = end
    for name, depth in STAGES:
        lo = start
        if depth is not None:
            lo = max(start, min([end - depth, *(align(end - depth, tf) for tf in tfs)]))
        if lo < hi:
            bounds.append((name, lo, hi))
            hi = lo
        if hi <= start:
            break
    return bounds


def clip(windows: Sequence[Range], lo: int, hi: int) -> list[Range]:
    """The parts of `windows` inside [lo, hi)."""
    return [(max(a, lo), min(b, hi)) for a, b in windows if max(a, lo) < min(b, hi)]


def estimate_requests(windows: Sequence[Range], timeframe: str, page_size: int) -> int:
    """Requests a walk of `windows` takes: ceil(periods / page_size) per window, at least one."""
    step = nominal_ms(timeframe)
    return sum(max(1, math.ceil(math.ceil((b - a) / step) / page_size)) for a, b in windows)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One series' windows still to fetch within one stage."""

    series: SeriesKey
    stage: str
    start: int  # the stage's range for this series, [start, end)
    end: int
    windows: tuple[Range, ...]
    requests: int  # estimated


@dataclass(slots=True)
class StageProgress:
    name: str
    series: int = 0  # series with something to fetch in this stage
    requests: int = 0  # estimated, revised as earlier stages finish
    requests_done: int = 0
    done: bool = False

    @property
    def requests_left(self) -> int:
        return 0 if self.done else max(0, self.requests - self.requests_done)


@dataclass(slots=True)
class BackfillPlan:
    """The stages of one backfill run and how far it got; read by /status and the CLI."""

    stages: list[StageProgress] = field(default_factory=list)
    stage: str = DONE  # the stage running now, or "done"

    def set_items(self, name: str, items: Sequence[WorkItem]) -> None:
        """(Re-)estimate a stage from its items; the requests already done are kept."""
        st = self.get(name)
        st.series = sum(1 for i in items if i.windows)
        st.requests = st.requests_done + sum(i.requests for i in items)

    def get(self, name: str) -> StageProgress:
        for st in self.stages:
            if st.name == name:
                return st
        st = StageProgress(name)
        self.stages.append(st)
        return st

    @property
    def requests_left(self) -> int:
        return sum(st.requests_left for st in self.stages)

    def summary(self, spacing_s: float) -> dict[str, object]:
        """For /status: ETA = requests left x the configured spacing between requests (the
        limiter may be shared with live work and 429s add waits, so it is a lower bound)."""
        left = self.requests_left
        return {
            "stage": self.stage,
            "stages": [
                {
                    "name": st.name,
                    "series": st.series,
                    "requests": st.requests,
                    "requests_done": st.requests_done,
                }
                for st in self.stages
            ],
            "requests_left": left,
            "eta_seconds": round(left * spacing_s, 1),
        }

    def line(self, spacing_s: float) -> str:
        """One line: stage, requests left, ETA."""
        return describe_plan(self.summary(spacing_s))


def describe_plan(plan: Mapping[str, object]) -> str:
    """A one-line summary of a plan summary (as /status serves it)."""
    stages = plan.get("stages")
    parts = []
    if isinstance(stages, list):
        for st in stages:
            if isinstance(st, Mapping):
                parts.append(f"{st.get('name')} {st.get('requests_done')}/{st.get('requests')}")
    eta = plan.get("eta_seconds")
    eta_text = format_eta(float(eta)) if isinstance(eta, int | float) else "-"
    return (
        f"stage {plan.get('stage')}, {plan.get('requests_left')} requests left, ETA {eta_text}"
        + (f" ({', '.join(parts)})" if parts else "")
    )


def format_eta(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def items_for_stage(
    name: str,
    known: Mapping[SeriesKey, tuple[int, int, list[Range]]],
    page_size: int,
) -> list[WorkItem]:
    """The stage's items from each series' (stage lo, stage hi, windows still to fetch over
    the whole run)."""
    items = []
    for key, (lo, hi, windows) in known.items():
        inside = clip(windows, lo, hi)
        requests = estimate_requests(inside, key.timeframe, page_size) if inside else 0
        items.append(WorkItem(key, name, lo, hi, tuple(inside), requests))
    return items
