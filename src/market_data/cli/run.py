"""`market-data run` (the daemon) and `market-data demo` (simulator + daemon + API, offline).

This is where the daemon and its HTTP API are composed (`serve`): the daemon knows nothing of
HTTP, the API reads the daemon through `api.view.DaemonView`. `python -m market_data.daemon`
runs `main()` here.

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 a part failed (or the API port is taken), 2 bad
settings.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from market_data.cli.common import exit_with_error, run_async, settings_or_exit
from market_data.config import Settings, load_settings
from market_data.errors import ConfigError
from market_data.logging_setup import configure_logging

# The daemon's own logger: "Cannot listen" is the daemon refusing to start.
log = logging.getLogger("market_data.daemon")

DEMO_TIMEFRAMES = "1m,1h,4h"
DEMO_SYMBOLS = "BTCUSD,ETHUSD,DOGEUSD"


def run() -> None:
    """Run the daemon: backfill, live WebSocket candles, gap repair, retention and the HTTP API.

    Stops cleanly on SIGTERM or Ctrl-C (every candle received is written first).
    """
    settings = settings_or_exit()
    code = run_async(serve(settings))
    raise typer.Exit(code)


async def serve(settings: Settings) -> int:
    """The daemon and its HTTP API, until SIGTERM/SIGINT; the process exit code."""
    from market_data.api.server import HttpApi, bind
    from market_data.daemon import Daemon

    daemon = Daemon(settings)
    try:
        sock = bind(settings.api_host, settings.api_port)
    except OSError as exc:
        log.error("Cannot listen on %s:%d: %s", settings.api_host, settings.api_port,
                  exc.strerror or exc)
        await daemon.close()
        return 1
    return await daemon.run(HttpApi(daemon, sock))


def main() -> int:
    """`python -m market_data.daemon`: `market-data run` without the command-line parser."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
    return asyncio.run(serve(settings))


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
    app.command("run")(run)
    app.command("demo")(demo)
