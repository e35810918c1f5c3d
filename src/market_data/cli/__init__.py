"""The `market-data` command line.

Each area keeps its commands in its own module here, exposing `register(app)`; this module owns
the app, the shared helpers, and the list of registrations in `_register_commands()`.

Helpers for command modules:
- `settings_or_exit()`: load the settings once per command and set up logging; a bad setting
  prints `error: VARIABLE: problem` on one line to stderr and exits 2.
- `exit_with_error(message, code=1)`: one line on stderr, secrets masked, then exit.
- `run_async(coro)`: run a coroutine to completion (one event loop per command).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from market_data import __version__
from market_data.config import Settings, load_settings
from market_data.errors import ConfigError, MarketDataError
from market_data.logging_setup import configure_logging, mask_secrets, register_secret

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2

HELP = """\
Keep a complete, correct history of Bitfinex OHLCV candles in SQLite or PostgreSQL.

The daemon (`run`) backfills history, streams live candles over WebSocket, detects and repairs
gaps, applies retention, and serves an HTTP API. The other commands do one of those jobs once,
show the state of the database, or run a local Bitfinex simulator.

Settings come from environment variables and from ./.env (the environment wins); see
.env.example. One-shot commands exit 0 on success, 1 on failure, 2 on bad usage or settings.
"""

# Set by the root callback from `--env-file`; read by settings_or_exit() in the command.
_ENV_FILE: ContextVar[str | None] = ContextVar("market_data_env_file", default=".env")

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
    _ENV_FILE.set(env_file or None)


def _env_file() -> str | None:
    return _ENV_FILE.get()


def exit_with_error(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print `error: <message>` as one line on stderr (secrets masked) and exit with `code`."""
    line = " ".join(mask_secrets(message).split())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def settings_or_exit(*, configure_logs: bool = True, **overrides: Any) -> Settings:
    """Load the settings for this command, or stop with exit code 2 naming the bad variable.

    `overrides` are field names (as for `load_settings`), e.g. from command-line options.
    """
    try:
        settings = load_settings(env_file=_env_file(), **overrides)
    except ConfigError as exc:
        exit_with_error(str(exc), code=EXIT_USAGE)
    for secret in settings.secret_values():
        register_secret(secret)
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format)
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; Ctrl-C ends it with exit code 130 and no traceback."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _register_commands(app: typer.Typer) -> None:
    # One module per area; each `register(app)` adds its commands. `--help` lists them in this
    # order. A new command module adds itself to this import and this tuple.
    from market_data.cli import backfill, cleanup, db, export, gaps, run, simulate, status

    for module in (run, simulate, backfill, gaps, cleanup, status, export, db):
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
