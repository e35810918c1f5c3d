"""Driver errors (SQLAlchemy, asyncpg, sqlite3, sockets) -> the project's error tree, once.

`StorageUnavailable` (retry later): the server cannot be reached, refuses more connections, is
starting or stopping, a statement timed out, or SQLite is locked by another process.
Two of those outages have names of their own, because /health reports them and they need a
different cure: `StorageReadOnly` (a read-only file, mount or server: SQLite keeps a connection it
opened read-only so for good, so the pool must be replaced) and `StorageFull` (no space left, or a
size limit reached). Both are checked first: a full or read-only database is also "refused".
`StorageError` (retrying the same thing cannot help): everything else the database refused.
Messages name the database (`host:port/db` or the SQLite file), never its password.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Iterator

import asyncpg
import sqlalchemy.exc as sa_exc

from market_data.errors import (
    MarketDataError,
    StorageError,
    StorageFull,
    StorageReadOnly,
    StorageUnavailable,
)

# sqlite3 primary result codes (the extended codes keep them in the low byte).
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_READ_ONLY_TEXT = ("readonly database", "read-only transaction", "read-only file system")
_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded")

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, unknown host (socket.gaierror), reset
    TimeoutError,
    asyncio.TimeoutError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # pool checkout timed out
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down, recovering
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,  # statement_timeout
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # The connection's protocol is in a bad state (an operation cut off mid-flight, e.g. by a
    # server restart or a cancelled task): that connection is invalidated, a fresh one works.
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
_UNAVAILABLE_TEXT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "too many connections",
    "connection refused",
    "connect call failed",
    "could not connect",
    "connection was closed",
    "connection is closed",
    "server closed the connection",
    "the database system is",
    "timed out",
    "timeout",
)
_MAX_DETAIL = 300

# What the drivers raise; anything else from inside a store call is a bug and is not masked.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    sqlite3.Error,
    OSError,
    TimeoutError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        orig = getattr(item, "orig", None)
        for nxt in (orig, item.__cause__, item.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)


def _detail(exc: BaseException) -> str:
    """The most specific driver message, one line, without SQLAlchemy's statement dump."""
    best = exc
    for item in _chain(exc):
        if not isinstance(item, sa_exc.SQLAlchemyError):
            best = item
            break
    text = str(best).strip().splitlines()[0] if str(best).strip() else type(best).__name__
    return text[:_MAX_DETAIL]


def is_unavailable(exc: BaseException) -> bool:
    for item in _chain(exc):
        if isinstance(item, _UNAVAILABLE_TYPES):
            return True
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return True
        if isinstance(item, (sqlite3.OperationalError, sa_exc.OperationalError)):
            text = str(item).lower()
            if any(marker in text for marker in _UNAVAILABLE_TEXT):
                return True
        elif isinstance(item, asyncpg.exceptions.PostgresError):
            # ALLOW_CONNECTIONS false (a DBA holding the database): reachable again later.
            if "not currently accepting connections" in str(item):
                return True
            continue
        else:
            text = str(item).lower()
            if any(marker in text for marker in _UNAVAILABLE_TEXT[:9]):
                return True
    return False


def _fault(exc: BaseException) -> type[StorageUnavailable] | None:
    """StorageReadOnly or StorageFull when that is what the chain says, else None."""
    for item in _chain(exc):
        if isinstance(item, asyncpg.exceptions.ReadOnlySQLTransactionError):
            return StorageReadOnly
        if isinstance(item, asyncpg.exceptions.DiskFullError):
            return StorageFull
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull
        if isinstance(item, OSError) and item.errno == errno.EROFS:
            return StorageReadOnly
        if isinstance(item, sqlite3.Error):
            code = getattr(item, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_READONLY:
                return StorageReadOnly
            if code == _SQLITE_FULL:
                return StorageFull
        # The drivers' own messages only: SQLAlchemy's wrapper quotes the statement and its
        # parameters, which may hold any text.
        if isinstance(item, asyncpg.exceptions.PostgresError | sqlite3.Error):
            text = str(item).lower()
            if any(marker in text for marker in _READ_ONLY_TEXT):
                return StorageReadOnly
            if any(marker in text for marker in _FULL_TEXT):
                return StorageFull
    return None


def translate(exc: BaseException, target: str, password: str | None = None) -> MarketDataError:
    """The project error for a driver failure while talking to `target` (describe_target)."""
    if isinstance(exc, MarketDataError):
        return exc
    detail = _detail(exc)
    if password:
        detail = detail.replace(password, "***")
    fault = _fault(exc)
    if fault is StorageReadOnly:
        return StorageReadOnly(f"database {target} is read-only: {detail}")
    if fault is StorageFull:
        return StorageFull(f"database {target} is full: {detail}")
    if is_unavailable(exc):
        return StorageUnavailable(f"database {target} is unavailable: {detail}")
    return StorageError(f"database {target} refused the operation: {detail}")
