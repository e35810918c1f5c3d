"""`market-data db upgrade`: create or migrate the schema, then exit."""

from __future__ import annotations

import logging

import typer

from market_data.cli.common import exit_with_error, run_async, settings_or_exit
from market_data.config import Settings
from market_data.errors import MarketDataError

log = logging.getLogger(__name__)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


async def _upgrade(settings: Settings) -> None:
    from market_data.storage.sql import open_store

    store = open_store(settings)
    try:
        await store.upgrade()
    finally:
        await store.close()


@db_app.command("upgrade")
def upgrade() -> None:
    """Create the tables or migrate them to the newest schema (also done at daemon start)."""
    settings = settings_or_exit()
    where = settings.database_location()
    try:
        run_async(_upgrade(settings))
    except MarketDataError as exc:
        problem = str(exc) if where in str(exc) else f"database at {where}: {exc}"
        exit_with_error(f"database upgrade failed: {problem}")
    typer.echo(f"database at {settings.safe_database_url} is up to date")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
