"""`market-data demo`: the Bitfinex simulator, and the daemon with its API against it, on SQLite.

One of the two commands that run the simulator (with `simulate`); a tour without internet.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from market_data.cli.common import exit_with_error, run_async, settings_or_exit
from market_data.cli.run import serve
from market_data.config import load_settings
from market_data.errors import ConfigError

DEMO_TIMEFRAMES = "1m,1h,4h"
DEMO_SYMBOLS = "BTCUSD,ETHUSD,DOGEUSD"


def demo(
    port: Annotated[int, typer.Option(help="HTTP API port.", min=1, max=65535)] = 8100,
    database: Annotated[
        Path | None,
        typer.Option(help="SQLite file to use (default: a fresh temporary one)."),
    ] = None,
    days: Annotated[float, typer.Option(help="Days of history to backfill.", min=0.1)] = 3.0,
    symbols: Annotated[str, typer.Option(help="Symbols to follow.")] = DEMO_SYMBOLS,
) -> None:
    """A tour without internet: the Bitfinex simulator and the daemon against it, on SQLite.

    Prints the API's URLs and runs until Ctrl-C.
    """
    settings_or_exit()  # logging as configured (LOG_LEVEL, LOG_FORMAT); the rest is demo's own
    if database is None:
        database = Path(tempfile.mkdtemp(prefix="market-data-demo-")) / "market_data.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    code = run_async(_demo(port, database.resolve(), days, symbols))
    raise typer.Exit(code)


async def _demo(port: int, database: Path, days: float, symbols: str) -> int:
    from market_data.simulator import SimulatorConfig, run_simulator

    # The simulator's 30-requests-a-minute limit is lifted so the tour's backfill is quick.
    async with run_simulator(SimulatorConfig(rest_rate_limit=0)) as sim:
        overrides: dict[str, Any] = {
            "database_url": f"sqlite:///{database}",
            "bitfinex_rest_url": sim.rest_url,
            "bitfinex_ws_url": sim.ws_url,
            "bitfinex_symbols": symbols,
            "bitfinex_timeframes": DEMO_TIMEFRAMES,
            "backfill_days": days,
            "api_port": port,
            "gap_detection_interval_minutes": 0.5,
            "gap_repair_interval_minutes": 0.25,
            "cleanup_initial_delay_minutes": 5,
            "cleanup_interval_hours": 1,
            "ws_save_flush_seconds": 1.0,
            # A local simulator without a rate limit: no need for Bitfinex's 6 s spacing.
            "rate_limit_delay": 0.1,
            "rate_limit_min_backoff_seconds": 5.0,
            "rate_limit_max_backoff": 10.0,
            "rate_limit_initial_backoff": 1.0,
        }
        try:
            settings = load_settings(env_file=None, **overrides)
        except ConfigError as exc:
            exit_with_error(str(exc), code=2)
        base = f"http://{settings.api_host}:{port}"
        first = settings.bitfinex_symbols[0]
        typer.echo(
            "\nmarket-data demo: a simulated Bitfinex and the daemon, on SQLite\n"
            f"  simulator REST  {sim.rest_url}   WebSocket {sim.ws_url}\n"
            f"  database        {database}\n"
            f"  dashboard       {base}/\n"
            f"  status          {base}/status\n"
            f"  health          {base}/health\n"
            f"  candles         {base}/candles?symbol={first}&timeframe=1m&limit=10\n"
            f"  4h (derived)    {base}/candles?symbol={first}&timeframe=4h&limit=10\n"
            f"  gaps, jobs      {base}/gaps  {base}/jobs\n"
            f"  API docs        {base}/docs\n"
            f"  metrics         {base}/metrics\n"
            "Ctrl-C to stop.\n"
        )
        return await serve(settings)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
