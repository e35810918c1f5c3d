"""What the daemon reports about itself: one plain record the daemon writes and the faces read
(/health, /status, /metrics). No I/O, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RuntimeState:
    """What /health and /status show about the daemon itself. Times are epoch ms."""

    started_at_ms: int
    phase: str = "starting"  # starting, running, stopping, stopped
    database_ready: bool = False
    database_error: str | None = None
    backfill: str = "pending"  # pending, running, done, failed, disabled, stopped
    backfill_error: str | None = None
    exchange_error: str | None = None
    unknown_symbols: list[str] = field(default_factory=list)
    crashed: str | None = None
