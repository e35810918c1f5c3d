"""The command line in subprocesses: help, bad settings, `db upgrade`, `status`."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SETTING_PREFIXES = (
    "DATABASE_",
    "BITFINEX_",
    "BACKFILL_",
    "GAP_",
    "REST_",
    "UPDATE_",
    "RETENTION_",
    "WS_",
    "RATE_LIMIT_",
    "CLEANUP_",
    "API_",
    "LOG_",
)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(SETTING_PREFIXES)}
    clean.update(env or {})
    command = [sys.executable, "-m", "market_data"] if module else [str(BIN / "market-data")]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # CONTRACT section 6.
    for command in ("run", "backfill", "gaps", "cleanup", "status", "db", "simulate", "demo"):
        assert re.search(rf"\b{command}\b", result.stdout), command
    assert "Bitfinex" in result.stdout
    module = run_cli("db", "--help", cwd=tmp_path, module=True)
    assert module.returncode == 0, module.stderr
    assert "upgrade" in module.stdout


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("status", cwd=tmp_path, env={"WS_SAVE_BATCH_SIZE": "-1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: WS_SAVE_BATCH_SIZE: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_env_file_option_names_another_file(tmp_path: Path) -> None:
    (tmp_path / "other.env").write_text("LOG_FORMAT=xml\n")
    result = run_cli("--env-file", "other.env", "status", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: LOG_FORMAT: ")


def test_a_bad_setting_in_dotenv_is_reported_the_same_way(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BITFINEX_TIMEFRAMES=1h,7h\n")
    result = run_cli("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: BITFINEX_TIMEFRAMES: ")
    assert not (tmp_path / "market_data.db").exists()  # stopped before doing anything


def test_db_upgrade_creates_the_tables_and_status_shows_an_empty_table(tmp_path: Path) -> None:
    db = tmp_path / "md.db"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    result = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"candles", "ingestion_jobs", "data_gaps"} <= names

    again = run_cli("db", "upgrade", cwd=tmp_path, env=env)  # idempotent
    assert again.returncode == 0, again.stderr

    status = run_cli("status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    for column in ("symbol", "timeframe", "candles", "lag", "open gaps"):
        assert column in status.stdout
    as_json = run_cli("status", "--json", cwd=tmp_path, env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == []


def test_db_upgrade_on_an_unreachable_server_names_it_without_the_password(
    tmp_path: Path,
) -> None:
    env = {"DATABASE_URL": "postgresql://u:secretpw@127.0.0.1:1/x"}
    result = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "127.0.0.1:1" in lines[0]
    assert "secretpw" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("args", [["no-such-command"], ["status", "--no-such-option"]])
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    assert run_cli(*args, cwd=tmp_path).returncode == 2


async def test_status_shows_each_series_with_its_open_gaps(tmp_path: Path) -> None:
    from market_data.models import Candle, SeriesKey
    from market_data.storage.sql import open_store

    db = tmp_path / "md.db"
    hour = 3_600_000
    start = 1_770_321_600_000  # 2026-02-05 20:00:00 UTC
    store = open_store(f"sqlite:///{db}")
    try:
        await store.upgrade()
        candles = [
            Candle("BTCUSD", "1h", start + i * hour, 100.0, 101.0, 99.0, 100.5, 1.0)
            for i in (0, 1, 5)
        ]
        await store.upsert_candles(candles)
        btc = SeriesKey("BTCUSD", "1h")
        await store.create_gaps_many({btc: [(start + 2 * hour, start + 5 * hour)]})
    finally:
        await store.close()

    env = {"DATABASE_URL": f"sqlite:///{db}"}
    result = run_cli("status", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["symbol"] == "BTCUSD"
    assert row["timeframe"] == "1h"
    assert row["candles"] == 3
    assert row["first"] == "2026-02-05T20:00:00Z"
    assert row["last"] == "2026-02-06T01:00:00Z"
    assert row["open_gaps"] == 1
    assert row["lag_seconds"] > 0
    table = run_cli("status", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "BTCUSD" in table.stdout
    assert "2026-02-05 20:00:00" in table.stdout
