"""`market-data cleanup`: apply the retention settings once (RETENTION_<TF> days).

Exit codes: 0 done, 1 the database failed, 2 bad settings.
"""

from __future__ import annotations

import typer

from market_data.cli.common import exit_with_error, run_async, settings_or_exit
from market_data.config import Settings
from market_data.errors import MarketDataError


async def _cleanup(settings: Settings) -> int:
    from market_data.services.retention import RetentionService
    from market_data.storage.sql import open_store

    store = open_store(settings)
    try:
        await store.upgrade()
        return await RetentionService(settings, store).run_once()
    finally:
        await store.close()


def cleanup() -> None:
    """Delete candles older than their timeframe's retention (RETENTION_1M, RETENTION_1H, ...)."""
    settings = settings_or_exit()
    try:
        deleted = run_async(_cleanup(settings))
    except MarketDataError as exc:
        exit_with_error(f"cleanup failed: {exc}")
    kept = ", ".join(f"{tf} {days:g} days" for tf, days in sorted(settings.retention_days.items()))
    typer.echo(f"Deleted {deleted} old candles (retention: {kept or 'none'})")


def register(app: typer.Typer) -> None:
    app.command("cleanup")(cleanup)
