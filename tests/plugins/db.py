"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

- `database_url`: a fresh, empty, migrated database per test, parametrized over `sqlite` and
  `postgres` (the latter marked `postgres`). PostgreSQL databases are cloned (CREATE DATABASE
  ... TEMPLATE) from a template migrated once per session (per xdist worker), a couple ahead of
  need on a background thread, and dropped WITH (FORCE) after the test; SQLite ones are copies
  of a migrated file in the test's tmp_path. Databases left by killed runs are swept at start.
- `store`: an opened, upgraded SqlStore on `database_url`, closed after the test.
- `fresh_database_url(backend)`: an empty, unmigrated database (for tests that start the daemon).
- `postgres_admin_url`: the server, for tests that need their own databases.

PostgreSQL is expected at 127.0.0.1:5432 as `postgres` (override: TEST_POSTGRES_URL). When it
is unreachable the PostgreSQL tests are skipped, except with CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import sqlalchemy as sa

from market_data.models import Gap, SeriesKey
from market_data.storage.dialect_time import datetime_to_ms
from market_data.storage.sql import SqlStore, open_store
from market_data.storage.tables import candles, ingestion_jobs

T = TypeVar("T")

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, in a thread with its own event loop
    (sync fixtures may be set up while a test's loop exists)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="db-fixture")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _probe() -> str | None:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL not reachable at {ADMIN_URL}: {exc}"
    await conn.close()
    return None


def _unique(prefix: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}_{worker}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _sweep_orphans() -> None:
    """Drop test databases left by killed test processes (their names carry the pid)."""
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname ~ '^md_(tmpl|test|fresh)_[^_]+_[0-9]+_'"
        )
        for (name,) in names:
            pid = int(name.split("_")[3])
            if not _pid_alive(pid):
                with contextlib.suppress(asyncpg.PostgresError):  # another worker got there
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    store = open_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL server's maintenance database URL; skips (fails under CI) without one."""
    reason = run_sync(_probe())
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must not be skipped)")
        pytest.skip(reason)
    return ADMIN_URL


class ClonePool:
    """Clones of a migrated template database, created ahead of need and dropped behind it,
    on a background thread: CREATE DATABASE costs ~0.4 s, which tests should not wait for."""

    def __init__(self, template: str, ahead: int = 2) -> None:
        self.template = template
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-clones")
        self._thread.start()
        self._creating = asyncio.Lock()  # used on the pool's loop only
        self._ready = [self._submit(self._create()) for _ in range(ahead)]
        self._dropping: list[concurrent.futures.Future[None]] = []

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _create(self) -> str:
        name = _unique("md_test")
        async with self._creating:
            await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def take(self) -> str:
        ready = self._ready.pop(0)
        self._ready.append(self._submit(self._create()))
        return ready.result(timeout=60)

    def release(self, name: str) -> None:
        drop = _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._dropping.append(self._submit(drop))

    def close(self) -> None:
        try:
            for ready in self._ready:
                self.release(ready.result(timeout=60))
            for dropping in self._dropping:
                dropping.result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


@pytest.fixture(scope="session")
def postgres_clones(postgres_admin_url: str) -> Iterator[ClonePool]:
    """A template database migrated once per session (per xdist worker), and its clones."""
    run_sync(_sweep_orphans())
    template = _unique("md_tmpl")
    run_sync(_admin(f'CREATE DATABASE "{template}"'))
    try:
        run_sync(_migrate(_url_for(template)))
        pool = ClonePool(template)
        try:
            yield pool
        finally:
            pool.close()
    finally:
        run_sync(_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_sync(_migrate(f"sqlite:///{path}"))  # closing folds the WAL back into the file
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty, migrated database for this test, on each backend."""
    if backend == "sqlite":
        path = tmp_path / "market_data.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    clones: ClonePool = request.getfixturevalue("postgres_clones")
    name = clones.take()
    try:
        yield _url_for(name)
    finally:
        clones.release(name)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = open_store(database_url)
    await opened.upgrade()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    """`make(backend)` -> the URL of an empty, unmigrated database, dropped after the test."""
    created: list[str] = []

    def make(backend: str = "sqlite") -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'fresh-{uuid.uuid4().hex[:8]}.db'}"
        if backend != "postgres":
            raise ValueError(f"unknown backend {backend!r}")
        request.getfixturevalue("postgres_admin_url")
        name = _unique("md_fresh")
        run_sync(_admin(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return _url_for(name)

    yield make
    for name in created:
        run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


Stats = dict[tuple[str, str], tuple[int, int | None, int | None, int | None]]


async def counted_stats(store: SqlStore) -> Stats:
    """What series_stats should say, counted the slow way: {(symbol, tf): (n, first, last,
    last_final)} for every series that has candles."""
    c = candles.c
    stmt = sa.select(
        c.symbol,
        c.timeframe,
        sa.func.count(),
        sa.func.min(c.ts),
        sa.func.max(c.ts),
        sa.func.max(sa.case((c.final, c.ts))),
    ).group_by(c.symbol, c.timeframe)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()

    def ms(value: Any) -> int | None:
        if value is None:
            return None
        return value if isinstance(value, int) else datetime_to_ms(value)

    return {(s, t): (int(n), ms(a), ms(b), ms(f)) for s, t, n, a, b, f in rows}


async def reported_stats(store: SqlStore) -> Stats:
    """series_stats as the store reports it, without series that have no candles left."""
    return {
        (s.symbol, s.timeframe): (s.candle_count, s.first_ts, s.last_ts, s.last_final_ts)
        for s in await store.series_stats()
        if s.candle_count
    }


# Plain SQL for what only tests ask of a database (the store offers only what the program uses).


async def count_rows(store: SqlStore, table: sa.Table) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def delete_finished_jobs_before(store: SqlStore, cutoff_ms: int) -> int:
    """Drop jobs no longer running that started before the cut-off; how many."""
    t = ingestion_jobs
    async with store.engine.begin() as conn:
        stmt = t.delete().where(t.c.started_at < cutoff_ms, t.c.status != "running")
        return int((await conn.execute(stmt)).rowcount)


async def record_gaps(
    store: SqlStore, series: SeriesKey, ranges: Sequence[tuple[int, int]]
) -> list[Gap]:
    """Record gaps of one series through the store's many-series path (the one detection uses)."""
    return await store.create_gaps_many({series: ranges})
