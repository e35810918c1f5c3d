"""Helpers every command module uses (the app itself is in `cli/__init__.py`).

- `settings_or_exit()`: load the settings once per command and set up logging; a bad setting
  prints `error: VARIABLE: problem` on one line to stderr and exits 2.
- `exit_with_error(message, code=1)`: one line on stderr, secrets masked, then exit.
- `run_async(coro)`: run a coroutine to completion (one event loop per command).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar

import typer

from market_data.config import Settings, load_settings
from market_data.errors import ConfigError
from market_data.logging_setup import configure_logging, mask_secrets, register_secret

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2

# Set by the root callback from `--env-file`; read by settings_or_exit() in the command.
ENV_FILE: ContextVar[str | None] = ContextVar("market_data_env_file", default=".env")


def _env_file() -> str | None:
    return ENV_FILE.get()


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
