"""Every setting given garbage: one line naming the variable, exit code 2, no traceback.

The bulk goes through `load_settings` in-process (every CONTRACT section 2 variable, several bad
values each); a sample per variable goes through the real entry points as subprocesses, run
concurrently: `python -m market_data.daemon` and `market-data status`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from market_data.config import load_settings
from market_data.errors import ConfigError
from tests.e2e.daemon_process import clean_env

NUMBER = ["abc", "nan", "inf", "-inf", "1e999", ""]
POSITIVE = [*NUMBER, "0", "-1", "-0.5"]
NON_NEGATIVE = [*NUMBER, "-1", "-0.001"]
COUNT = ["abc", "-1", "1.5", "nan", "", "1e3x"]
BOOL = ["abc", "2", "maybe", "yes please", ""]

# CONTRACT section 2, every name, each with values that must be refused.
GARBAGE: dict[str, list[str]] = {
    "DATABASE_URL": [
        "ftp://x",
        "abc",
        "",
        "mysql://u:p@h/db",
        "postgresql://",
        "sqlite://",
        "postgresql://u:p@h:notaport/db",
        "http://127.0.0.1/db",
        "postgresql://u:p@127.0.0.1:99999/db",
        "postgresql://u:p@h:0/db",
        "postgresql://u:p@h:-1/db",
        "postgresql://u:p@bad host/db",
        "postgresql://u:p@h/a/b",
        f"postgresql://u:p@h/{'d' * 64}",
        "postgresql://u:p@h/db\x01",
        "sqlite:///x\x01.db",
    ],
    "BITFINEX_SYMBOLS": ["", ",,,", "B$D", "BTC USD", "x" * 80, "💥"],
    "BITFINEX_TIMEFRAMES": ["", "abc", "2x", "-1", "1h,bogus", "0m"],
    "BACKFILL_ON_STARTUP": BOOL,
    "BACKFILL_DAYS": [*POSITIVE, "100000"],
    "GAP_REPAIR_INTERVAL_MINUTES": POSITIVE,
    "GAP_DETECTION_INTERVAL_MINUTES": POSITIVE,
    "GAP_REPAIR_MAX_REPAIRS_PER_RUN": COUNT,
    "GAP_DETECTION_MAX_OPEN_GAPS": COUNT,
    "REST_UPDATE_ENABLED": BOOL,
    "UPDATE_INTERVAL_SECONDS": POSITIVE,
    "RETENTION_1M": NON_NEGATIVE,
    "RETENTION_1H": NON_NEGATIVE,
    "RETENTION_4H": NON_NEGATIVE,
    "RETENTION_1D": NON_NEGATIVE,
    "RETENTION_5M": NON_NEGATIVE,
    "RETENTION_BOGUS": ["30"],
    "WS_INGESTION_ENABLED": BOOL,
    "WS_CATCHUP_LOOKBACK_MINUTES": NON_NEGATIVE,
    "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION": [*COUNT, "0", "31", "1000000"],
    "WS_SAVE_BATCH_SIZE": [*COUNT, "0", "1000000000"],
    "WS_SAVE_FLUSH_SECONDS": POSITIVE,
    "WS_RECONNECT_INITIAL_BACKOFF": POSITIVE,
    "WS_RECONNECT_MAX_BACKOFF": POSITIVE,
    "RATE_LIMIT_DELAY": NON_NEGATIVE,
    "RATE_LIMIT_MAX_RETRIES": [*COUNT, "100000"],
    "RATE_LIMIT_INITIAL_BACKOFF": NON_NEGATIVE,
    "RATE_LIMIT_MIN_BACKOFF_SECONDS": NON_NEGATIVE,
    "RATE_LIMIT_MAX_BACKOFF": NON_NEGATIVE,
    "BITFINEX_REST_URL": ["ftp://x", "abc", "", "http://", "ws://api.example", "http://h:99999"],
    "BITFINEX_WS_URL": ["ftp://x", "abc", "", "wss://", "https://api.example/ws/2"],
    "WS_HEARTBEAT_TIMEOUT_SECONDS": POSITIVE,
    "CLEANUP_INITIAL_DELAY_MINUTES": NON_NEGATIVE,
    "CLEANUP_INTERVAL_HOURS": POSITIVE,
    "API_HOST": ["", "a b", "http://x/", "user@host"],
    "API_PORT": [*COUNT, "0", "65536", "70000"],
    "API_ALLOWED_HOSTS": ["a b", "h:80", "http://x/", "*x.com", "x" * 300, "[::1]:80", "💥"],
    "LOG_LEVEL": ["abc", "", "-1", "verbose"],
    "LOG_FORMAT": ["abc", "", "xml", "yaml"],
}
# API_TOKEN has no bad value: any text is a token, and empty means unset (documented).

CASES = [(name, value) for name, values in GARBAGE.items() for value in values]
# Pairs that are only wrong together.
PAIRS = [
    (
        {"WS_RECONNECT_INITIAL_BACKOFF": "10", "WS_RECONNECT_MAX_BACKOFF": "5"},
        "WS_RECONNECT_MAX_BACKOFF",
    ),
    ({"RATE_LIMIT_INITIAL_BACKOFF": "10", "RATE_LIMIT_MAX_BACKOFF": "5"}, "RATE_LIMIT_MAX_BACKOFF"),
]
SECRET = "Sup3rS3cretPw"
BAD_PORT = f"postgresql://u:{SECRET}@127.0.0.1:99999/db"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer setting and no .env leaks in."""
    env = clean_env()
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _check_error(exc: ConfigError, name: str) -> None:
    text = str(exc)
    assert exc.variable == name, (name, text)
    assert text.startswith(f"{name}: "), text
    assert "\n" not in text, text
    assert len(text) < 300, text


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v[:12]!r}" for n, v in CASES])
def test_each_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    _check_error(caught.value, name)


@pytest.mark.parametrize(("values", "name"), PAIRS)
def test_contradicting_values_name_a_variable(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], name: str
) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    _check_error(caught.value, name)


def test_a_bad_value_in_dotenv_is_named_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BACKFILL_DAYS=forever\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    _check_error(caught.value, "BACKFILL_DAYS")


def test_database_url_errors_never_echo_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (
        f"mysql://u:{SECRET}@h/db",
        f"postgresql://u:{SECRET}@h:notaport/db",
        f"ftp://u:{SECRET}@x/",
        BAD_PORT,
        f"postgresql://u:{SECRET}@h:1x/db",
        f"postgresql://u:{SECRET}@x@h:1x/db",
        f"postgresql://u:{SECRET}@h/a/b",
    ):
        monkeypatch.setenv("DATABASE_URL", url)
        with pytest.raises(ConfigError) as caught:
            load_settings()
        _check_error(caught.value, "DATABASE_URL")
        assert SECRET not in str(caught.value)


def test_database_url_errors_name_the_part_and_show_the_masked_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for url, part in (
        (BAD_PORT, "port 99999"),
        (f"postgresql://u:{SECRET}@h:1x/db", "port"),
        (f"postgresql://u:{SECRET}@bad host/db", "host 'bad host'"),
        (f"postgresql://u:{SECRET}@h/a/b", "database name 'a/b'"),
    ):
        monkeypatch.setenv("DATABASE_URL", url)
        with pytest.raises(ConfigError) as caught:
            load_settings()
        assert part in caught.value.problem, caught.value
        assert url.replace(SECRET, "***") in caught.value.problem, caught.value


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:  # a daemon that did not exit: never leave it running
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# A few through the real entry points, concurrently (each subprocess costs ~1 s of CPU; the
# in-process cases above cover every variable and value through the same load_settings).
DAEMON = [sys.executable, "-m", "market_data.daemon"]
CLI = [sys.executable, "-m", "market_data", "status"]
RUN = [sys.executable, "-m", "market_data", "run"]
SUBPROCESS_CASES = [
    ("BACKFILL_DAYS", "nan", DAEMON),
    ("DATABASE_URL", f"mysql://u:{SECRET}@h/db", DAEMON),
    ("BITFINEX_WS_URL", "ftp://x", DAEMON),
    ("WS_SAVE_BATCH_SIZE", "-1", DAEMON),
    ("DATABASE_URL", "ftp://x", CLI),
    ("GAP_REPAIR_INTERVAL_MINUTES", "inf", CLI),
    ("LOG_FORMAT", "xml", CLI),
    # A port out of range was a driver traceback (status) or retried forever (run).
    ("DATABASE_URL", BAD_PORT, CLI),
    ("DATABASE_URL", BAD_PORT, RUN),
    ("DATABASE_URL", BAD_PORT, DAEMON),
]


async def test_entry_points_exit_2_naming_the_variable(tmp_path: Path) -> None:
    jobs = SUBPROCESS_CASES
    semaphore = asyncio.Semaphore(8)

    async def one(name: str, value: str, argv: list[str]) -> tuple[str, str, int, str, str]:
        async with semaphore:
            code, out, err = await _run(argv, clean_env(**{name: value}), tmp_path)
        return name, value, code, out, err

    results = await asyncio.gather(*(one(*job) for job in jobs))
    failures = []
    for name, value, code, out, err in results:
        lines = [line for line in (out + err).splitlines() if line.strip()]
        ok = (
            code == 2
            and len(lines) == 1
            and name in lines[0]
            and "Traceback" not in out + err
            and SECRET not in out + err
        )
        if not ok:
            failures.append(f"{name}={value!r}: exit {code}, output {(out + err)[-400:]!r}")
    assert not failures, "\n".join(failures)
