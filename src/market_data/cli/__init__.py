"""The `market-data` command line.

Each area keeps its commands in its own module here, exposing `register(app)`; this module owns
the app and the list of registrations in `_register_commands()`. The helpers the command modules
share are in `cli/common.py` (so no command module imports this one back).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from market_data import __version__
from market_data.cli.common import ENV_FILE, EXIT_FAILURE, EXIT_USAGE
from market_data.errors import ConfigError, MarketDataError
from market_data.logging_setup import mask_secrets

HELP = """\
Keep a complete, correct history of Bitfinex OHLCV candles in SQLite or PostgreSQL.

The daemon (`run`) backfills history, streams live candles over WebSocket, detects and repairs
gaps, applies retention, and serves an HTTP API. The other commands do one of those jobs once,
show the state of the database, or run a local Bitfinex simulator.

Settings come from environment variables and from ./.env (the environment wins); see
.env.example. One-shot commands exit 0 on success, 1 on failure, 2 on bad usage or settings.
"""

app = typer.Typer(
    name="market-data",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"market-data {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    env_file: Annotated[
        str,
        typer.Option(
            "--env-file",
            help="Read settings from this file as well as the environment ('' for none).",
        ),
    ] = ".env",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Parameters common to every command."""
    ENV_FILE.set(env_file or None)


def _register_commands(app: typer.Typer) -> None:
    # One module per area; each `register(app)` adds its commands. `--help` lists them in this
    # order. A new command module adds itself to this import and this tuple.
    from market_data.cli import backfill, cleanup, db, demo, export, gaps, run, simulate, status

    for module in (run, demo, simulate, backfill, gaps, cleanup, status, export, db):
        module.register(app)


_register_commands(app)


def main() -> None:
    """Console-script entry point (`market-data`)."""
    try:
        app()
    except ConfigError as exc:
        # Settings built outside settings_or_exit (e.g. in the daemon) end up here.
        typer.echo(f"error: {mask_secrets(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except MarketDataError as exc:
        typer.echo(f"error: {' '.join(mask_secrets(str(exc)).split())}", err=True)
        sys.exit(EXIT_FAILURE)
