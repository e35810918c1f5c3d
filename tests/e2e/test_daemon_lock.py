"""One daemon per SQLite file, with real processes: a second `market-data run` on the same file
exits 1 with one line naming the file and the running daemon's PID; one-shot commands keep
working beside the daemon; a daemon killed with SIGKILL leaves no stale lock behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from market_data.config import load_settings
from market_data.daemon_lock import DaemonAlreadyRunning, acquire_daemon_lock
from tests.e2e.daemon_process import DaemonProcess, clean_env, free_port, start_daemon, wait_for
from tests.plugins.sim import SimulatorFactory

CLI = [sys.executable, "-m", "market_data"]


def _settings(sim: Any, url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": sim.rest_url,
        "BITFINEX_WS_URL": sim.ws_url,
        "BITFINEX_SYMBOLS": "BTCUSD",
        "BITFINEX_TIMEFRAMES": "1h",
        "BACKFILL_DAYS": "1",
        "RATE_LIMIT_DELAY": "0.01",
    }


async def _command(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:  # a second daemon that did not refuse: never leave it running
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def _serving(d: DaemonProcess) -> bool:
    return (await d.get("/health")).status_code == 200


async def test_a_second_daemon_on_the_same_sqlite_file_refuses_to_start(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory()
    database = tmp_path / "shared.db"
    settings = _settings(sim, f"sqlite:///{database}")
    first = await start_daemon(tmp_path, "first", **settings)
    try:
        await wait_for(lambda: _serving(first), 30, "the first daemon's API")
        env = clean_env(**settings, API_PORT=str(free_port()))
        code, out = await _command("run", env=env, cwd=tmp_path)
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 1, out
        assert len(lines) == 1, out
        assert str(database) in lines[0], out
        assert f"PID {first.proc.pid}" in lines[0], out
        assert "Traceback" not in out
        assert first.alive

        # One-shot commands share the file with the running daemon.
        for args in (["status"], ["gaps", "list"], ["status", "--json"]):
            code, out = await _command(*args, env=env, cwd=tmp_path)
            assert code == 0, (args, out)
        assert (database.parent / "shared.db.lock").read_text().strip() == str(first.proc.pid)

        # SIGKILL: no chance to clean up, yet the kernel drops the lock with the process.
        killed, _ = await first.stop(signal.SIGKILL)
        assert killed == -signal.SIGKILL
    finally:
        await first.kill()

    second = await start_daemon(tmp_path, "second", **settings)
    try:
        await wait_for(lambda: _serving(second), 30, "the second daemon's API")
        code, _ = await second.stop()
        assert code == 0, second.log()[-2000:]
    finally:
        await second.kill()
    assert "already running" not in second.log()
    # A clean stop leaves no PID behind to mislead a reader.
    assert (database.parent / "shared.db.lock").read_text() == ""


async def test_relative_paths_name_the_same_file_and_postgresql_takes_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    held = acquire_daemon_lock(load_settings(env_file=None, database_url="sqlite:///./md.db"))
    assert held is not None
    try:
        absolute = load_settings(env_file=None, database_url=f"sqlite:///{tmp_path}/md.db")
        with pytest.raises(DaemonAlreadyRunning, match=f"PID {os.getpid()}") as caught:
            acquire_daemon_lock(absolute)
        assert str(tmp_path / "md.db") in str(caught.value)
    finally:
        held.release()
    again = acquire_daemon_lock(load_settings(env_file=None, database_url="sqlite:///md.db"))
    assert again is not None
    again.release()
    postgres = load_settings(env_file=None, database_url="postgresql://u@127.0.0.1/db")
    assert acquire_daemon_lock(postgres) is None
