"""What the stream saw and REST has not confirmed yet: per series one span of closed periods.

Two kinds of closed period wait for the check against REST (`final_check.py`):

- stream finals: candles the writer finalized from the stream (a last update may have been
  lost, so the values may be stale). They are checked soon (`batch_age_ms`).
- no-trade periods: a watched series' periods that closed without an update. On a healthy
  connection that means no trades, but an update the stream silently lost looks the same, so
  they are "to confirm", not gaps: they are confirmed in bulk (one page covers up to 10,000
  periods of a series), about once an hour per series (`confirm_age_ms`,
  `confirm_interval_ms`), and the confirmation records them empty or writes the candle the
  stream missed.

A series is watched from the period before its channel became ready; from then on every
period that closes (past the grace) joins its pending span on each `advance`, with or without
an update. A reconnect keeps the watch: the catch-up fills the break, and the span still gets
confirmed, so nothing in it is lost. Periods of a break stay in the span too: the confirmation
is a REST answer like a gap repair's, at one request for the whole span. Memory is O(series):
one span, one cursor, one time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from market_data.models import SeriesKey
from market_data.timeframes import align, duration_ms, is_fixed, next_open, previous_open

Span = tuple[int, int]  # open times, both inclusive

HOUR_MS = 3_600_000


@dataclass(slots=True)
class Pending:
    """Closed periods [oldest, newest] to check; `final` is the oldest stream final among them
    (None: only no-trade periods)."""

    oldest: int
    newest: int
    final: int | None = None

    @property
    def span(self) -> Span:
        return self.oldest, self.newest

    def merge(self, other: Pending) -> None:
        self.oldest = min(self.oldest, other.oldest)
        self.newest = max(self.newest, other.newest)
        if other.final is not None:
            self.final = other.final if self.final is None else min(self.final, other.final)

    def left(self, unproven: Span) -> Pending:
        """What stays to check of this span when `unproven` (inside it) was not proven: its
        finals too when the unproven part reaches them."""
        final = None
        if self.final is not None and unproven[1] >= self.final:
            final = max(self.final, unproven[0])
        return Pending(unproven[0], unproven[1], final)


@dataclass(frozen=True, slots=True)
class DueRules:
    """When a series' pending span is checked (all on the ingestion clock, epoch ms).

    - With stream finals: once the oldest final closed `batch_age_ms` ago.
    - With only no-trade periods: once the oldest closed `confirm_age_ms` ago, the previous
      check of the series started `confirm_interval_ms` ago, and a page can prove it (a page
      never proves the newest ended period empty, so one newer period must have closed too).

    Defaults: the interval (one hour) is the budget, at most one request per quiet series an
    hour; the age (57 minutes) is below it so that a series not checked for a while (just
    watched, or after its stream finals were checked) is confirmed within the hour. At steady
    state the interval decides: each check shows every period that closed since the previous
    one, so a candle the stream missed is written within the hour; the oldest pending period is
    the one the previous check could not prove empty, which waits an hour plus one period (61
    minutes for 1m; for 1h a page proves an hour only once the next one ended). Shortening the
    interval would buy little and double the requests.
    """

    batch_age_ms: int
    grace_ms: int
    confirm_age_ms: int = 57 * 60_000
    confirm_interval_ms: int = HOUR_MS

    def due_ms(self, series: SeriesKey, pending: Pending, last_start: int | None) -> int:
        tf = series.timeframe
        if pending.final is not None:
            return next_open(pending.final, tf) + self.batch_age_ms
        closed = next_open(pending.oldest, tf)
        due = max(closed + self.confirm_age_ms, next_open(closed, tf) + self.grace_ms)
        if last_start is not None:
            due = max(due, last_start + self.confirm_interval_ms)
        return due


class UncheckedFinals:
    """Per series, the span of closed periods not yet checked against REST (see the module).

    A span being checked is held apart (`take`), so periods noted meanwhile start a fresh span;
    `settle` merges back what the check did not prove.
    """

    def __init__(self) -> None:
        self._pending: dict[SeriesKey, Pending] = {}
        self._checking: dict[SeriesKey, Pending] = {}
        self._watch: dict[SeriesKey, int] = {}  # -> the oldest period not yet added
        self._last_start: dict[SeriesKey, int] = {}  # -> when its previous check started

    def __len__(self) -> int:
        """Series with anything to check (stream finals or no-trade periods)."""
        return len(self._pending.keys() | self._checking.keys())

    def note(self, series: SeriesKey, ts: int) -> None:
        """A candle finalized from the stream (its values may be stale)."""
        self._add(series, Pending(ts, ts, ts))

    def watch(self, series: SeriesKey, now_ms: int, from_ms: int | None = None) -> None:
        """The series' channel is ready at `now_ms`: periods from the running one on are the
        stream's to see. The one before is taken too: the start-up catch-up cannot prove it
        empty (it is the newest ended period when it asks), and REST confirms it with the rest.
        `from_ms` starts the watch earlier still (a 1m series covering its coarser siblings'
        first periods: `sibling.py`). A series already watched keeps its cursor (a reconnect)."""
        tf = series.timeframe
        start = previous_open(align(now_ms, tf), tf)
        if from_ms is not None:
            start = min(start, align(from_ms, tf))
        self._watch.setdefault(series, start)

    def unwatch(self, series: SeriesKey) -> None:
        """No longer streamed: what is pending is still checked, nothing new is added."""
        self._watch.pop(series, None)

    @property
    def watched(self) -> int:
        return len(self._watch)

    def is_watched(self, series: SeriesKey) -> bool:
        return series in self._watch

    def waiting(self, series: SeriesKey) -> Pending | None:
        """The series' pending span, unless none or it is being checked."""
        return self._pending.get(series)

    def oldest(self, series: SeriesKey) -> int | None:
        """The oldest period of the series not confirmed yet: pending, being checked or (for a
        watched one) the next to close. None: nothing, and not watched."""
        opens = [p.oldest for p in (self._pending.get(series), self._checking.get(series)) if p]
        cursor = self._watch.get(series)
        if cursor is not None:
            opens.append(cursor)
        return min(opens, default=None)

    def confirm_through(self, series: SeriesKey, last_open: int) -> None:
        """The series' pending periods up to `last_open` are confirmed (by other means than its
        own check): what is newer stays, its finals with it."""
        pending = self._pending.get(series)
        if pending is None or last_open < pending.oldest:
            return
        if last_open >= pending.newest:
            del self._pending[series]
            return
        # Only the oldest final is known: the rest may hold one from its first period on.
        self._pending[series] = pending.left(
            (next_open(last_open, series.timeframe), pending.newest)
        )

    def advance(self, closed_by_ms: int) -> None:
        """Add every watched period that ended by `closed_by_ms` (now minus the grace)."""
        for series, cursor in self._watch.items():
            tf = series.timeframe
            running = align(closed_by_ms, tf)
            if cursor < running:
                self._add(series, Pending(cursor, previous_open(running, tf)))
                self._watch[series] = running

    def _add(self, series: SeriesKey, pending: Pending) -> None:
        held = self._pending.get(series)
        if held is None:
            self._pending[series] = pending
        else:
            held.merge(pending)

    def take(self, series: SeriesKey, max_periods: int, started_ms: int) -> Pending | None:
        """The span to check now, at most `max_periods` long (the oldest part; the rest stays
        pending)."""
        pending = self._pending.pop(series, None)
        if pending is None:
            return None
        self._last_start[series] = started_ms
        tf = series.timeframe
        if is_fixed(tf) and (pending.newest - pending.oldest) // duration_ms(tf) >= max_periods:
            cut = pending.oldest + max_periods * duration_ms(tf)
            rest = Pending(cut, pending.newest)
            if pending.final is not None:
                rest.final = max(pending.final, cut)
            self._pending[series] = rest
            taken = Pending(pending.oldest, cut - duration_ms(tf), pending.final)
            if taken.final is not None and taken.final > taken.newest:
                taken.final = None
            pending = taken
        self._checking[series] = pending
        return pending

    def settle(self, series: SeriesKey, left: Pending | None) -> None:
        """The check of `series` ended; `left` (if any) is still to check."""
        self._checking.pop(series, None)
        if left is not None:
            self._add(series, left)

    def most_overdue(
        self, now_ms: int, rules: DueRules, skip: Callable[[SeriesKey], bool] = lambda _: False
    ) -> SeriesKey | None:
        """The due series that has been due longest, if any is due at `now_ms`."""
        best: SeriesKey | None = None
        best_due = now_ms + 1
        for series, pending in self._pending.items():
            due = rules.due_ms(series, pending, self._last_start.get(series))
            if due < best_due and not skip(series):
                best, best_due = series, due
        return best

    def next_due_ms(
        self, rules: DueRules, skip: Callable[[SeriesKey], bool] = lambda _: False
    ) -> int | None:
        """When the next series is due (None when nothing is pending but what `skip` skips)."""
        return min(
            (
                rules.due_ms(s, p, self._last_start.get(s))
                for s, p in self._pending.items()
                if not skip(s)
            ),
            default=None,
        )

    def _all(self) -> Iterable[tuple[SeriesKey, Pending]]:
        yield from self._pending.items()
        yield from self._checking.items()

    def oldest_close_ms(self) -> int | None:
        """When the oldest unchecked stream final (pending or being checked) closed."""
        return min(
            (next_open(p.final, s.timeframe) for s, p in self._all() if p.final is not None),
            default=None,
        )

    def final_series(self) -> int:
        """Series with stream finals not yet checked."""
        return len({s for s, p in self._all() if p.final is not None})

    def periods(self) -> int:
        """Closed periods waiting for the check (an upper bound: spans may hold candles)."""
        total = 0
        for series, pending in self._all():
            tf = series.timeframe
            step = duration_ms(tf) if is_fixed(tf) else 31 * 24 * HOUR_MS
            total += (pending.newest - pending.oldest) // step + 1
        return total

    def oldest_unconfirmed(self) -> dict[SeriesKey, int]:
        """Per watched or pending series, the oldest period REST has not confirmed yet: gap
        detection stops before it (the stream saw it, or will be checked)."""
        oldest = dict(self._watch)
        for series, pending in self._all():
            held = oldest.get(series)
            oldest[series] = pending.oldest if held is None else min(held, pending.oldest)
        return oldest
