"""What the store's own writes say about the database, for /health.

A read ping cannot see a database that is read-only or full: it answers `SELECT 1` while every
write fails. So every write transaction reports its outcome here, and /health shows the last
failure (and since when) until a write succeeds again.
"""

from __future__ import annotations

from dataclasses import dataclass

from market_data.errors import StorageFull, StorageReadOnly, StorageUnavailable

# Why writes fail, as /health names it.
READ_ONLY = "read-only"
FULL = "full"
UNAVAILABLE = "unavailable"


def fault_name(exc: StorageUnavailable) -> str:
    if isinstance(exc, StorageReadOnly):
        return READ_ONLY
    if isinstance(exc, StorageFull):
        return FULL
    return UNAVAILABLE


@dataclass(slots=True)
class WriteHealth:
    """Outcome of the latest write transactions. Times are epoch ms."""

    last_ok_ms: int | None = None
    fault: str | None = None  # READ_ONLY, FULL or UNAVAILABLE while writes fail
    error: str | None = None  # the last failure's message (names the database, no password)
    failing_since_ms: int | None = None
    failures: int = 0  # failed writes since the last success

    @property
    def failing(self) -> bool:
        return self.fault is not None

    def succeeded(self, now_ms: int) -> None:
        self.last_ok_ms = now_ms
        self.fault = self.error = self.failing_since_ms = None
        self.failures = 0

    def failed(self, exc: StorageUnavailable, now_ms: int) -> None:
        if self.failing_since_ms is None:
            self.failing_since_ms = now_ms
        self.fault = fault_name(exc)
        self.error = str(exc)[:300]
        self.failures += 1
