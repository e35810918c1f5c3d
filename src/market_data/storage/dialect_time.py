"""How a time is stored, per engine: the one engine difference that lives in the schema rather
than in the dialects' statements (a column type is chosen when a table is compiled).

Times are `int` epoch ms in Python. `EpochMs` stores them as `timestamptz` on PostgreSQL (users
query them with plain SQL) and as INTEGER epoch ms on SQLite (documented in the README).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _MS


class EpochMs(sa.types.TypeDecorator[int]):
    """An epoch-ms `int` in Python; `timestamptz` on PostgreSQL, INTEGER on SQLite."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return ms_to_datetime(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return datetime_to_ms(value)
        return int(value)
