"""`market-data run`: the daemon and its HTTP API.

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

import typer

from market_data.cli.common import run_async, settings_or_exit
from market_data.config import Settings, load_settings
from market_data.errors import ConfigError, PermanentError
from market_data.logging_setup import configure_logging

# The daemon's own logger: "Cannot listen" is the daemon refusing to start.
log = logging.getLogger("market_data.daemon")


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
        daemon.claim()
    except PermanentError as exc:
        log.error("Cannot start: %s", exc)
        await daemon.close()
        return 1
    try:
        sock = bind(settings.api_host, settings.api_port)
    except OSError as exc:
        log.error(
            "Cannot listen on %s:%d: %s", settings.api_host, settings.api_port, exc.strerror or exc
        )
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


def register(app: typer.Typer) -> None:
    app.command("run")(run)
