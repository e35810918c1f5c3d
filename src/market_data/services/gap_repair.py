"""The seed's module path for gap maintenance (CONTRACT section 1); the code lives in
`services/gaps/` (service, detect, repair)."""

from market_data.services.gaps.service import (
    DetectionReport,
    GapService,
    GapStats,
    RepairReport,
    RetryPolicy,
)

__all__ = ["DetectionReport", "GapService", "GapStats", "RepairReport", "RetryPolicy"]
