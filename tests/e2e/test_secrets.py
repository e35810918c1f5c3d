"""The DATABASE_URL password and the API_TOKEN never show: not in logs (text or JSON, at DEBUG),
not in any response, not in error messages, including the error paths (an unreachable exchange,
a database refusing connections, a bad token, `market-data db upgrade` against a host that is
not there).

PostgreSQL here trusts local connections, so any password is accepted: it is there to be leaked.
The password holds a percent-encoded character, so both spellings are searched for.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from market_data.simulator import Simulator
from tests.e2e.daemon_process import DaemonProcess, clean_env, free_port, start_daemon, wait_for
from tests.plugins.db import ADMIN_URL

pytestmark = pytest.mark.postgres

PASSWORD_RAW = "S3cr3tPassw0rd%21x"  # as written in the URL
PASSWORD = "S3cr3tPassw0rd!x"  # as decoded
TOKEN = "t0ken-5ecret-9a8b7c6d"
SECRETS = (PASSWORD_RAW, PASSWORD, TOKEN, "S3cr3tPassw0rd")
PATHS = (
    "/health",
    "/status",
    "/metrics",
    "/jobs",
    "/gaps",
    "/docs",
    "/openapi.json",
    "/candles?symbol=BTCUSD&timeframe=1m",
    "/candles?symbol=%27&timeframe=x",
    "/jobs?limit=abc",
    "/nope",
)


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD_RAW}@", 1)


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


async def _allow_connections(database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await conn.close()


async def _collect(d: DaemonProcess, seen: list[str]) -> None:
    for path in PATHS:
        response = await d.get(path)
        seen.append(
            f"GET {path} -> {response.status_code} {dict(response.headers)}\n{response.text}"
        )
    for path in ("/backfill", "/gaps/repair"):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}"},
            {"Authorization": "Basic abc"},
        ):
            response = await d.client.post(path, headers=headers)
            seen.append(f"POST {path} -> {response.status_code}\n{response.text}")


async def _daemon_with_errors(
    sim: Simulator,
    url: str,
    tmp_path: Path,
    name: str,
    log_format: str,
    exchange_ok: bool,
) -> tuple[DaemonProcess, list[str]]:
    dead = f"http://127.0.0.1:{free_port()}"
    d = await start_daemon(
        tmp_path,
        name,
        DATABASE_URL=url,
        BITFINEX_REST_URL=sim.rest_url if exchange_ok else dead,
        BITFINEX_WS_URL=sim.ws_url if exchange_ok else dead.replace("http", "ws") + "/ws/2",
        BITFINEX_SYMBOLS="BTCUSD",
        BITFINEX_TIMEFRAMES="1m,4h",
        BACKFILL_DAYS="0.05",
        GAP_DETECTION_INTERVAL_MINUTES="0.02",
        GAP_REPAIR_INTERVAL_MINUTES="0.02",
        WS_RECONNECT_INITIAL_BACKOFF="0.2",
        WS_RECONNECT_MAX_BACKOFF="0.5",
        RATE_LIMIT_DELAY="0",
        API_TOKEN=TOKEN,
        LOG_FORMAT=log_format,
        LOG_LEVEL="DEBUG",
    )
    seen: list[str] = []
    database = url.rsplit("/", 1)[1]
    try:
        await wait_for(lambda: d.get("/health"), 30, f"{name}: the API")

        async def settled() -> bool:
            status = await d.json("/status")
            if exchange_ok:
                return bool(status["backfill"]["state"] == "done")
            health = (await d.get("/health")).json()
            return bool(health["checks"]["exchange"]["status"] != "ok")

        await wait_for(settled, 40, f"{name}: backfill done or the exchange reported down")
        await _collect(d, seen)
        # The database refuses connections: every error path that names it runs now.
        await _allow_connections(database, False)

        async def database_down() -> bool:
            return (await d.get("/health")).status_code == 503

        await wait_for(database_down, 20, f"{name}: /health 503 while the database is down")
        await _collect(d, seen)
        await _allow_connections(database, True)
        await wait_for(lambda: _status_ok(d), 30, f"{name}: the database back")
        code, _ = await d.stop()
        assert code == 0, d.log()[-3000:]
    except BaseException:
        await _allow_connections(database, True)
        await d.kill()
        raise
    return d, seen


async def _status_ok(d: DaemonProcess) -> bool:
    return (await d.get("/health")).status_code == 200


async def test_no_secret_in_logs_responses_or_errors(
    simulator: Simulator,
    fresh_database_url: Callable[[str], str],
    tmp_path: Path,
) -> None:
    urls = [_with_password(fresh_database_url("postgres")) for _ in range(2)]
    runs = await asyncio.gather(
        _daemon_with_errors(simulator, urls[0], tmp_path, "text", "text", exchange_ok=True),
        _daemon_with_errors(simulator, urls[1], tmp_path, "json", "json", exchange_ok=False),
    )
    for d, seen in runs:
        log = d.log()
        # The error paths did run: the outage and (for one) the exchange were logged.
        assert "unavailable" in log.lower(), log[-2000:]
        assert "postgres:***@" in log or "127.0.0.1:5432" in log, log[:2000]
        assert not _leaks(log), (_leaks(log), d.log_path)
        for text in seen:
            assert not _leaks(text), (_leaks(text), text[:500])
    assert any("503" in text.split("\n", 1)[0] for _, seen in runs for text in seen)
    assert any(" 401" in text.split("\n", 1)[0] for _, seen in runs for text in seen)
    assert any(" 403" in text.split("\n", 1)[0] for _, seen in runs for text in seen)
    json_log = runs[1][0].log()
    assert "exchange" in json_log.lower() or "bitfinex" in json_log.lower()


async def _cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "market_data",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("url", "args"),
    [
        # Nothing listens on that port: connection refused.
        (f"postgresql://postgres:{PASSWORD_RAW}@127.0.0.1:{{port}}/md", ["db", "upgrade"]),
        # A host name that cannot resolve.
        (f"postgresql://admin:{PASSWORD_RAW}@no-such-host.invalid:5432/md", ["db", "upgrade"]),
        # The server is there, the database is not.
        (
            f"postgresql://postgres:{PASSWORD_RAW}@127.0.0.1:5432/md_no_such_db_41",
            ["db", "upgrade"],
        ),
        (f"postgresql://postgres:{PASSWORD_RAW}@127.0.0.1:{{port}}/md", ["status"]),
        (f"postgresql://postgres:{PASSWORD_RAW}@127.0.0.1:{{port}}/md", ["gaps", "list"]),
    ],
)
async def test_cli_errors_never_print_the_password(
    url: str, args: list[str], tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=url.format(port=free_port()), API_TOKEN=TOKEN, LOG_LEVEL="DEBUG")
    code, out = await _cli(args, env, tmp_path)
    assert code == 1, out
    assert out.strip(), "an error message was expected"
    assert "Traceback" not in out, out
    assert not _leaks(out), out
