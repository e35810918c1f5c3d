"""DATABASE_URL handling: pure functions, no I/O.

Users write `sqlite:///PATH` or `postgresql://user:pass@host:port/db` (also `postgres://`,
`postgresql+asyncpg://`, `postgresql+psycopg://`); the store runs on the async drivers
(aiosqlite, asyncpg). Messages about a database name its place, never its password.

Every part is checked before anything connects (scheme, host, port, database name), so a typo
is one line at start instead of a driver traceback or a retry loop.
"""

from __future__ import annotations

import ipaddress
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"

_SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"})
_POSTGRES_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgresql+psycopg2",
    }
)
_USAGE = "use sqlite:///PATH or postgresql://user:password@host:port/database"
# RFC 1123 host names (underscores too: some container networks use them).
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
_MAX_DATABASE_NAME = 63  # PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1)
# `scheme://user:password@`: the password, found without parsing the rest (which may be broken).
# Greedy to the last `@`: a password may hold an unescaped `@` (masking too much is harmless).
_PASSWORD_IN_URL = re.compile(r"^([^:/?#]+://[^:/?#@]*:).*@")


def _parse(url: str) -> URL:
    text = url.strip()
    if text.startswith("postgres://"):
        # SQLAlchemy only knows the long spelling; Heroku-style URLs use the short one.
        text = "postgresql://" + text[len("postgres://") :]
    try:
        return make_url(text)
    except ArgumentError:
        raise ValueError(f"DATABASE_URL is not a URL ({_USAGE})") from None
    except ValueError:
        # SQLAlchemy's own int() of the port; its message would not say which part is wrong.
        raise ValueError("DATABASE_URL port is not a number from 1 to 65535") from None


def _check_text(part: str, value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"DATABASE_URL {part} contains control characters")


def _check_postgres_parts(parsed: URL) -> None:
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ValueError(f"DATABASE_URL port {parsed.port} is out of range (1-65535)")
    host = parsed.host
    # No host is libpq's default (the local socket, then localhost), which asyncpg follows too.
    if host is not None and not _valid_host(host):
        raise ValueError(f"DATABASE_URL host {host[:80]!r} is not a host name or IP address")
    database = parsed.database
    if not database:
        raise ValueError(f"DATABASE_URL names no database ({_USAGE})")
    _check_text("database name", database)
    if "/" in database or len(database.encode()) > _MAX_DATABASE_NAME:
        raise ValueError(
            f"DATABASE_URL database name {database[:80]!r} is not a PostgreSQL database name"
            f" (at most {_MAX_DATABASE_NAME} bytes, no '/')"
        )
    _check_text("user name", parsed.username or "")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None
    return True


def normalize_database_url(url: str) -> str:
    """The async-driver form of a user's DATABASE_URL; ValueError when it is not one we serve."""
    parsed = _parse(url)
    scheme = parsed.drivername
    if scheme in _SQLITE_SCHEMES:
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"DATABASE_URL needs a file path for SQLite ({_USAGE})")
        _check_text("file path", parsed.database)
        parsed = parsed.set(drivername=SQLITE_DRIVER)
    elif scheme in _POSTGRES_SCHEMES:
        _check_postgres_parts(parsed)
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
        return mask_password(url)


def mask_password(url: str) -> str:
    """`scheme://user:***@...` for any text, even a URL too broken to parse."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url.strip(), count=1)


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
