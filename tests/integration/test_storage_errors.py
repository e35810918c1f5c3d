"""Failures come out as the project's errors, naming the database but never its password;
the schema the migrations build is the one tables.py describes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from market_data.errors import ConfigError, StorageError, StorageUnavailable
from market_data.models import Candle
from market_data.storage import sqlite as sqlite_dialect
from market_data.storage.sql import SqlStore, open_store
from market_data.storage.tables import metadata
from market_data.storage.translate import translate


async def test_unreachable_postgres_is_unavailable_and_names_the_host() -> None:
    store = open_store("postgresql://u:secretpw@127.0.0.1:1/x")
    try:
        for call in (store.upgrade, store.ping, store.series_stats):
            with pytest.raises(StorageUnavailable) as caught:
                await call()
            message = str(caught.value)
            assert "127.0.0.1:1" in message
            assert "secretpw" not in message
            assert "\n" not in message
    finally:
        await store.close()


async def test_unknown_host_is_unavailable() -> None:
    store = open_store("postgres://u:secretpw@no-such-host.invalid:5432/x")
    try:
        with pytest.raises(StorageUnavailable, match=r"no-such-host\.invalid:5432") as caught:
            await store.upgrade()
        assert "secretpw" not in str(caught.value)
    finally:
        await store.close()


async def test_missing_postgres_database_is_a_storage_error(postgres_admin_url: str) -> None:
    base = postgres_admin_url.rsplit("/", 1)[0].replace("postgres@", "postgres:hunter2@")
    store = open_store(f"{base}/md_no_such_database")
    try:
        with pytest.raises(StorageError) as caught:
            await store.upgrade()
        message = str(caught.value)
        assert "127.0.0.1:5432/md_no_such_database" in message
        assert "does not exist" in message
        assert "hunter2" not in message
    finally:
        await store.close()


@pytest.mark.parametrize("path", ["/proc/no/such/dir/md.db", "/etc/hostname/md.db"])
async def test_unusable_sqlite_path_is_a_storage_error(path: str) -> None:
    store = open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(StorageError, match=path):
            await store.upgrade()
    finally:
        await store.close()


def test_bad_urls_are_config_errors() -> None:
    for url in ("mysql://u:p@h/db", "sqlite://", "not a url"):
        with pytest.raises(ConfigError, match="DATABASE_URL"):
            open_store(url)


async def test_sqlite_locked_by_another_process_is_unavailable(
    tmp_path: object, fresh_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_dialect, "BUSY_TIMEOUT_MS", 50)
    url = fresh_database_url("sqlite")
    store = open_store(url)
    await store.upgrade()
    other = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable, match="locked"):
            await store.upsert_candles([Candle("BTCUSD", "1m", 0, 1, 1, 1, 1, 1)])
        other.execute("ROLLBACK")
        assert (await store.upsert_candles([Candle("BTCUSD", "1m", 0, 1, 1, 1, 1, 1)])).written == 1
    finally:
        other.close()
        await store.close()


def test_translation_of_driver_errors() -> None:
    locked = translate(sqlite3.OperationalError("database is locked"), "/data/md.db")
    assert isinstance(locked, StorageUnavailable)
    assert "/data/md.db" in str(locked)
    refused = translate(ConnectionRefusedError(111, "Connection refused"), "db:5432/x")
    assert isinstance(refused, StorageUnavailable)
    syntax = translate(sqlite3.OperationalError('near "SELEC": syntax error'), "/data/md.db")
    assert type(syntax) is StorageError
    leaked = translate(
        sqlite3.OperationalError("password authentication failed: s3cret"), "h:1/d", "s3cret"
    )
    assert "s3cret" not in str(leaked)
    # Seen in the chaos run after a database outage: a connection whose protocol state was cut
    # off mid-operation. Temporary (a fresh connection works), never an untranslated crash.
    import asyncpg

    broken = translate(
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        "h:1/d",
    )
    assert isinstance(broken, StorageUnavailable)
    busy = translate(
        asyncpg.exceptions.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
        "h:1/d",
    )
    assert isinstance(busy, StorageUnavailable)


BOTH = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BOTH)
async def test_statements_on_an_unmigrated_database_are_storage_errors(
    backend: str, fresh_database_url: Callable[[str], str]
) -> None:
    store = open_store(fresh_database_url(backend))
    try:
        with pytest.raises(StorageError):
            await store.list_jobs()
    finally:
        await store.close()


@pytest.mark.parametrize("backend", BOTH)
async def test_concurrent_upgrades_of_a_fresh_database(
    backend: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(backend)
    stores = [open_store(url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.upgrade() for s in stores))
        await stores[0].upgrade()
        assert await stores[1].list_jobs() == []
    finally:
        for s in stores:
            await s.close()


async def test_migrations_build_exactly_the_tables(store: SqlStore) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
