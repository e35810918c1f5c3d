"""DATABASE_URL handling: pure functions, no I/O.

Users write `sqlite:///PATH` or `postgresql://user:pass@host:port/db` (also `postgres://`,
`postgresql+asyncpg://`, `postgresql+psycopg://`); the store runs on the async drivers
(aiosqlite, asyncpg). Messages about a database name its place, never its password.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"

_SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"})
_POSTGRES_SCHEMES = frozenset({
    "postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg2",
})
_USAGE = "use sqlite:///PATH or postgresql://user:password@host:port/database"


def _parse(url: str) -> URL:
    text = url.strip()
    if text.startswith("postgres://"):
        # SQLAlchemy only knows the long spelling; Heroku-style URLs use the short one.
        text = "postgresql://" + text[len("postgres://"):]
    try:
        return make_url(text)
    except ArgumentError:
        raise ValueError(f"DATABASE_URL is not a URL ({_USAGE})") from None


def normalize_database_url(url: str) -> str:
    """The async-driver form of a user's DATABASE_URL; ValueError when it is not one we serve."""
    parsed = _parse(url)
    scheme = parsed.drivername
    if scheme in _SQLITE_SCHEMES:
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"DATABASE_URL needs a file path for SQLite ({_USAGE})")
        parsed = parsed.set(drivername=SQLITE_DRIVER)
    elif scheme in _POSTGRES_SCHEMES:
        if not parsed.database:
            raise ValueError(f"DATABASE_URL names no database ({_USAGE})")
        query = dict(parsed.query)
        if "sslmode" in query:
            # libpq spells it sslmode; asyncpg takes the same values as `ssl`.
            query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(drivername=POSTGRES_DRIVER, query=query)
    else:
        raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported ({_USAGE})")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return _parse(url).drivername in _SQLITE_SCHEMES


def safe_database_url(url: str) -> str:
    """The URL with its password replaced by `***` (for logs and messages)."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except ValueError:
        return "<unparsable DATABASE_URL>"


def describe_target(url: str) -> str:
    """`host:port/db` for PostgreSQL, the file path for SQLite: never the password."""
    try:
        parsed = _parse(url)
    except ValueError:
        return "<unparsable DATABASE_URL>"
    if parsed.drivername in _SQLITE_SCHEMES:
        return str(parsed.database)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def password_of(url: str) -> str | None:
    """The password, so error text from a driver can be scrubbed of it."""
    try:
        password = _parse(url).password
    except ValueError:
        return None
    return str(password) if password else None
