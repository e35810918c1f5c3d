"""A database that is read-only or full is a state the store reports and leaves by itself.

Made for real: `chattr +i` on the SQLite file, a tmpfs filled to the last byte, a PostgreSQL
database whose new sessions are read-only. The store must name the fault (StorageReadOnly,
StorageFull: temporary, so every writer retries), record it in `write_health` (a read ping
still succeeds), and write again on the first try after the fault clears, on a fresh
connection rather than the read-only one it had.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from market_data.errors import StorageFull, StorageReadOnly, StorageUnavailable
from market_data.models import Candle, SeriesKey
from market_data.storage.health import FULL, READ_ONLY
from market_data.storage.sql import SqlStore, open_store
from tests.plugins.db import ADMIN_URL
from tests.storage_faults import (
    database_on,
    fill_disk,
    read_only_database,
    small_disk,
    small_postgres_disk,
    write_protected,
)

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
BTC = SeriesKey("BTCUSD", "1m")


def candles(first: int, n: int) -> list[Candle]:
    return [
        Candle("BTCUSD", "1m", T0 + i * M, 100.0, 102.0, 98.0, 101.0, 1.5, True)
        for i in range(first, first + n)
    ]


async def stored(store: SqlStore) -> int:
    return len(await store.candles_in_range(BTC, T0, T0 + 100_000 * M, 100_000))


def test_read_only_and_full_are_temporary_storage_faults() -> None:
    # Every writer already rides out StorageUnavailable (buffers, retries with backoff).
    assert issubclass(StorageReadOnly, StorageUnavailable)
    assert issubclass(StorageFull, StorageUnavailable)


async def test_write_protected_sqlite_file_recovers_once_writable(
    fresh_database_url: Callable[[str], str],
) -> None:
    """Issue 15, finding 1: the file was write-protected when the store opened it; SQLite
    opened it read-only, and the store reused that connection for good."""
    url = fresh_database_url("sqlite")
    path = Path(url.removeprefix("sqlite:///"))
    setup = open_store(url)
    await setup.upgrade()
    await setup.upsert_candles(candles(0, 10))
    await setup.close()

    store = open_store(url)
    try:
        with write_protected(path) as release:
            with pytest.raises(StorageReadOnly, match="read-only"):
                await store.upsert_candles(candles(10, 10))
            assert store.write_health.fault == READ_ONLY
            assert store.write_health.failures == 1
            await store.ping()  # reads still work: a ping alone would say "ok"
            assert await stored(store) == 10
            release()
            result = await store.upsert_candles(candles(10, 10))
        assert result.written == 10
        assert store.write_health.fault is None
        assert store.write_health.last_ok_ms is not None
        assert await stored(store) == 20
    finally:
        await store.close()


@pytest.mark.postgres
async def test_read_only_postgres_sessions_are_renewed(
    fresh_database_url: Callable[[str], str],
) -> None:
    url = fresh_database_url("postgres")
    database = url.rsplit("/", 1)[1]
    store = open_store(url)
    try:
        await store.upgrade()
        async with read_only_database(ADMIN_URL, database):
            # The switch ended the pooled sessions: the first write may meet a dead one.
            for _ in range(3):
                with pytest.raises(StorageUnavailable) as caught:
                    await store.upsert_candles(candles(0, 10))
                if isinstance(caught.value, StorageReadOnly):
                    break
            assert isinstance(caught.value, StorageReadOnly), caught.value
            assert store.write_health.fault == READ_ONLY
            # Reads open new sessions, read-only ones; lifting the setting leaves them so.
            await store.ping()
        result = await store.upsert_candles(candles(0, 10))
        assert result.written == 10
        assert store.write_health.fault is None
    finally:
        await store.close()


async def test_full_disk_is_named_and_writes_resume_when_space_returns(
    tmp_path: Path,
    sqlite_template: Path,
) -> None:
    """Issue 15, finding 5: a full disk was a plain refusal (StorageError), so writers dropped
    their rows, and nothing showed it while reads went on working."""
    with small_disk(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        path = disk / "md.db"
        shutil.copyfile(sqlite_template, path)
        store = open_store(f"sqlite:///{path}")
        try:
            await store.upsert_candles(candles(0, 100))
            free_space = fill_disk(disk)
            with pytest.raises(StorageFull, match="full"):
                await store.upsert_candles(candles(100, 5_000))
            assert store.write_health.fault == FULL
            assert "full" in (store.write_health.error or "")
            await store.ping()
            free_space()
            await store.upsert_candles(candles(100, 5_000))
            assert store.write_health.fault is None
            assert await stored(store) == 5_100
        finally:
            await store.close()


@pytest.mark.postgres
async def test_full_postgres_tablespace_is_named_and_writes_resume() -> None:
    with small_postgres_disk(16 * 1024 * 1024) as disk:
        async with database_on(ADMIN_URL, disk) as url:
            store = open_store(url)
            try:
                await store.upgrade()
                await store.upsert_candles(candles(0, 100))
                free_space = fill_disk(disk)
                with pytest.raises(StorageFull, match="full"):
                    await store.upsert_candles(candles(100, 50_000))
                assert store.write_health.fault == FULL
                await store.ping()
                free_space()
                await store.upsert_candles(candles(100, 50_000))
                assert store.write_health.fault is None
                assert await stored(store) == 50_100
            finally:
                await store.close()
