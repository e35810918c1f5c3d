"""Driver errors that mean "read-only" or "full" become StorageReadOnly / StorageFull (the
integration tests make them for real; these cover the shapes that are hard to make here)."""

from __future__ import annotations

import errno
import sqlite3

import asyncpg
import pytest

from market_data.errors import StorageError, StorageFull, StorageReadOnly, StorageUnavailable
from market_data.storage.health import FULL, READ_ONLY, UNAVAILABLE, WriteHealth
from market_data.storage.translate import translate


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageFull),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), StorageFull),
        (OSError(errno.EROFS, "Read-only file system"), StorageReadOnly),
        (sqlite3.OperationalError("database or disk is full"), StorageFull),
        (sqlite3.OperationalError("attempt to write a readonly database"), StorageReadOnly),
        (asyncpg.exceptions.DiskFullError("could not extend file"), StorageFull),
        (
            asyncpg.exceptions.ReadOnlySQLTransactionError(
                "cannot execute INSERT in a read-only transaction"
            ),
            StorageReadOnly,
        ),
        (sqlite3.OperationalError("database is locked"), StorageUnavailable),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StorageError),
    ],
)
def test_fault_kinds(exc: BaseException, expected: type[Exception]) -> None:
    translated = translate(exc, "db.example:5432/md", "pw")
    assert type(translated) is expected
    assert "db.example:5432/md" in str(translated)


def test_write_health_keeps_the_last_failure_until_a_write_succeeds() -> None:
    health = WriteHealth()
    assert not health.failing
    health.failed(StorageFull("database x is full"), 1_000)
    health.failed(StorageReadOnly("database x is read-only"), 2_000)
    assert (health.fault, health.failing_since_ms, health.failures) == (READ_ONLY, 1_000, 2)
    health.failed(StorageUnavailable("gone"), 3_000)
    assert health.fault == UNAVAILABLE
    health.succeeded(4_000)
    assert not health.failing
    assert (health.last_ok_ms, health.failures, health.error) == (4_000, 0, None)
    health.failed(StorageFull("full again"), 5_000)
    assert (health.fault, health.failing_since_ms) == (FULL, 5_000)
