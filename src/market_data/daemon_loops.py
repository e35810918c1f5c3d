"""The daemon's periodic loops, each a named task with its interval from the settings.

In a cluster, gap detection, retention and the update loop are led: they run on the one member
holding the loop's lease, once for the whole cluster (`ClusterDuty.led`); gap repair runs on
every member, which split the series by claims.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from market_data.config import Settings
from market_data.daemon_cluster import ClusterDuty
from market_data.daemon_pairs import PAIR_REFRESH_S
from market_data.scheduler import PeriodicLoop

WAL_CHECKPOINT_INTERVAL_S = 10.0  # SQLite's auto-checkpoint is off (write latency)

Cycle = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class LoopWork:
    """One cycle of each loop."""

    detect_gaps: Cycle
    repair_gaps: Cycle
    retention: Cycle
    update: Cycle
    refresh_pairs: Cycle
    checkpoint: Cycle


def build_loops(s: Settings, cluster: ClusterDuty, work: LoopWork) -> dict[str, PeriodicLoop]:
    detect_s = s.gap_detection_interval_minutes * 60
    repair_s = s.gap_repair_interval_minutes * 60
    led = cluster.led
    loops = [
        cluster.loop(),
        PeriodicLoop(
            "gap_detection",
            led("gap_detection", work.detect_gaps),
            detect_s,
            initial_delay=detect_s,
        ),
        PeriodicLoop("gap_repair", work.repair_gaps, repair_s, initial_delay=repair_s),
        PeriodicLoop(
            "cleanup",
            led("cleanup", work.retention),
            s.cleanup_interval_hours * 3600,
            initial_delay=s.cleanup_initial_delay_minutes * 60,
        ),
    ]
    if s.rest_update_enabled:
        interval = s.update_interval_seconds
        loops.append(
            PeriodicLoop("update", led("update", work.update), interval, initial_delay=interval)
        )
    if s.has_symbol_patterns:
        loops.append(
            PeriodicLoop(
                "pair_refresh", work.refresh_pairs, PAIR_REFRESH_S, initial_delay=PAIR_REFRESH_S
            )
        )
    if s.is_sqlite:
        loops.append(
            PeriodicLoop(
                "wal_checkpoint",
                work.checkpoint,
                WAL_CHECKPOINT_INTERVAL_S,
                initial_delay=WAL_CHECKPOINT_INTERVAL_S,
            )
        )
    return {loop.name: loop for loop in loops}
