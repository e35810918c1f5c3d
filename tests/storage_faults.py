"""Real storage faults for tests: a write-protected SQLite file, a full disk, a read-only
PostgreSQL database. Each is undone on exit, whatever the test did.

- `write_protected(path)`: `chattr +i` (root ignores file modes, not the immutable flag).
- `small_disk(directory, size)`: a tmpfs of `size` bytes mounted there; `fill_disk` then takes
  every free byte with a ballast file and returns the function that frees it again.
- `small_postgres_disk(size)` and `database_on(admin_url, directory)`: a PostgreSQL database
  whose tables live in a tablespace on such a disk.
- `read_only_database(admin_url, name)`: `default_transaction_read_only` on that database and
  its sessions ended, so every new session is read-only (as on a hot standby).

A test that cannot make the fault here (no root, no ext4, no mount) is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def write_protected(path: Path) -> Iterator[Callable[[], None]]:
    """Make `path` immutable; yields the function that lifts it (also called on exit)."""
    done = _run("chattr", "+i", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot write-protect {path}: {done.stderr.strip()}")

    def release() -> None:
        _run("chattr", "-i", str(path))

    try:
        yield release
    finally:
        release()


@contextlib.contextmanager
def small_disk(directory: Path, size: int) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small disk at {directory}: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        _run("umount", "-l", str(directory))


def fill_disk(directory: Path) -> Callable[[], None]:
    """Write a ballast file until the disk under `directory` is full; returns its remover."""
    ballast = directory / "ballast"
    block = b"\0" * 4096
    with contextlib.suppress(OSError), ballast.open("wb", buffering=0) as out:
        while True:
            out.write(block)
    stat = os.statvfs(directory)
    assert stat.f_bavail == 0, "the disk is not full"
    return lambda: ballast.unlink(missing_ok=True)


async def set_read_only(admin_url: str, database: str, read_only: bool) -> None:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        value = "on" if read_only else "off"
        await conn.execute(
            f'ALTER DATABASE "{database}" SET default_transaction_read_only = {value}'
        )
        if read_only:
            # Sessions take the setting when they start: end them, as a failover would. When
            # it is lifted they are left alone: a session that began read-only stays so.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def read_only_database(admin_url: str, database: str) -> AsyncIterator[None]:
    await set_read_only(admin_url, database, True)
    try:
        yield
    finally:
        await set_read_only(admin_url, database, False)


@contextlib.contextmanager
def small_postgres_disk(size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes that the PostgreSQL server can use as a tablespace (owned by
    its user, under /tmp: pytest's own tmp directories are closed to other users)."""
    owner = _run("id", "-u", "postgres"), _run("id", "-g", "postgres")
    if any(done.returncode != 0 for done in owner):
        pytest.skip("no local postgres user to give a tablespace to")
    directory = Path(tempfile.mkdtemp(prefix="md-pgdisk-"))
    directory.chmod(0o755)
    uid, gid = (done.stdout.strip() for done in owner)
    options = f"size={size},uid={uid},gid={gid},mode=0700"
    done = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory))
    if done.returncode != 0:
        directory.rmdir()
        pytest.skip(f"cannot mount a small disk at {directory}: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        _run("umount", "-l", str(directory))
        directory.rmdir()


@contextlib.asynccontextmanager
async def database_on(admin_url: str, location: Path) -> AsyncIterator[str]:
    """A fresh database whose tables live in a tablespace at `location`; yields its URL."""
    name = f"md_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}_disk"
    space = f"{name}_space"
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(f"CREATE TABLESPACE \"{space}\" LOCATION '{location}'")
        await conn.execute(f'CREATE DATABASE "{name}" TABLESPACE "{space}"')
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'DROP TABLESPACE IF EXISTS "{space}"')
        await conn.close()
