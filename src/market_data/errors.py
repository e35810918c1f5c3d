"""The project's one exception tree. Its shape is the retry policy.

    MarketDataError                    root: every error the project raises on purpose
    ├── ConfigError                    a setting is wrong; the process stops with exit code 2
    ├── InvalidCandleError             a candle breaks an invariant; it is rejected, never stored
    ├── PayloadError                   an exchange payload could not be parsed
    ├── TemporaryError                 retry later, with backoff
    │   ├── StorageUnavailable         the database cannot be reached or is busy
    │   │   ├── StorageReadOnly        it answers reads but refuses writes (read-only file,
    │   │   │                          mount or server); a fresh connection is needed
    │   │   └── StorageFull            the disk, or the database's size limit, is full
    │   ├── ExchangeUnavailable        5xx, timeouts, connection errors, maintenance
    │   └── RateLimited                HTTP 429 or error 11010; everyone waits
    └── PermanentError                 retrying the same thing cannot help
        ├── StorageError               the database refused the statement
        ├── ExchangeRequestError       the exchange refused the parameters (10020)
        └── UnknownSymbol              the exchange does not list this pair

Driver errors (SQLAlchemy, asyncpg, sqlite3, httpx, websockets) are translated into this tree
once, at the edge that calls the driver; nothing above the edges sees a driver exception.
"""

from __future__ import annotations


class MarketDataError(Exception):
    """Something went wrong in market-data."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigError(MarketDataError):
    """A setting has a bad value."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class InvalidCandleError(MarketDataError):
    """A candle breaks an invariant (finite numbers, high >= low, aligned time, volume >= 0)."""


class PayloadError(MarketDataError):
    """An exchange payload could not be parsed."""


class TemporaryError(MarketDataError):
    """A temporary failure: try again later."""


class StorageUnavailable(TemporaryError):
    """The database cannot be reached or is busy."""


class StorageReadOnly(StorageUnavailable):
    """The database answers reads but refuses writes (read-only file, mount or server)."""


class StorageFull(StorageUnavailable):
    """The database cannot grow: its disk (or its size limit) is full."""


class ExchangeUnavailable(TemporaryError):
    """The exchange cannot be reached or answered with a server error."""


class RateLimited(TemporaryError):
    """The exchange rate-limited us (HTTP 429 or error 11010)."""


class PermanentError(MarketDataError):
    """A permanent failure: retrying the same request cannot succeed."""


class StorageError(PermanentError):
    """The database refused the statement."""


class ExchangeRequestError(PermanentError):
    """The exchange refused the request's parameters."""


class UnknownSymbol(PermanentError):
    """The exchange does not list this pair."""
