"""One daemon per SQLite file: an exclusive lock on `<database>.lock`, held for the daemon's life.

SQLite serialises writers, but two daemons on one file would each backfill, stream and repair
the same series, doubling requests to the exchange and racing on the bookkeeping tables. PostgreSQL
deployments coordinate through the database instead, so this applies to SQLite only. One-shot
commands (`status`, `gaps list`, `backfill`...) never take the lock and keep working beside a
running daemon.

The lock is `flock` on a file beside the database, holding the owner's PID for the message a
second daemon prints. The kernel drops it when the process ends, however it ends, so a crash
never leaves a stale lock; the file itself stays (removing it would let a third process lock a
fresh file while the second still waits on the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from market_data.config import Settings
from market_data.errors import PermanentError


class DaemonAlreadyRunning(PermanentError):
    """Another daemon is already running on this SQLite database."""


class DaemonLock:
    """A held lock; `release()` when the daemon has closed the database."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no PID of a stopped daemon left to mislead a reader
        os.close(fd)  # closing the only descriptor releases the flock


def lock_path_for(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def acquire_daemon_lock(settings: Settings) -> DaemonLock | None:
    """Lock the SQLite database for this daemon (None on PostgreSQL).

    Raises DaemonAlreadyRunning naming the file and the running daemon's PID, or PermanentError
    when the lock file cannot be created at all (the daemon could not write there either).
    """
    if not settings.is_sqlite:
        return None
    database = Path(settings.database_location()).expanduser().absolute()
    path = lock_path_for(database)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise PermanentError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_pid(fd)
        os.close(fd)
        raise DaemonAlreadyRunning(
            f"another market-data daemon (PID {owner}) is already running on {database}"
            f" (lock file {path}); stop it first, or give this one another DATABASE_URL"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise PermanentError(f"cannot lock {path}: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DaemonLock(path, fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    # The owner writes its PID just after locking; a reader may come in between.
    return text if text.isdigit() else "unknown"
