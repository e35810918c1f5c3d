"""Which dialect serves a DATABASE_URL. The dialects import the interface (`dialect.py`); this
module imports them, and nothing imports back."""

from __future__ import annotations

from market_data.storage.dialect import Dialect
from market_data.storage.postgres import PostgresDialect
from market_data.storage.sqlite import SqliteDialect


def dialect_for(url: str, exchange: str) -> Dialect:
    """The dialect for an already normalized URL."""
    if url.startswith("sqlite"):
        return SqliteDialect(url, exchange)
    return PostgresDialect(url, exchange)
