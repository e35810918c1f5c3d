"""Run `python -m market_data.daemon` as a subprocess and talk to its API (for the e2e tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# Variables of ours that must not leak from the developer's environment into a test daemon.
_PREFIXES = (
    "DATABASE_URL",
    "BITFINEX_",
    "BACKFILL_",
    "GAP_",
    "REST_UPDATE",
    "UPDATE_",
    "RETENTION_",
    "CLEANUP_",
    "WS_",
    "RATE_LIMIT_",
    "API_",
    "LOG_",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    env.update(settings)
    return env


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, every: float = 0.25
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = await probe()
            if result:
                return result
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})"
            )
        await asyncio.sleep(every)


@dataclass
class DaemonProcess:
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    client: httpx.AsyncClient

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def json(self, path: str, **kwargs: Any) -> Any:
        response = await self.client.get(path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Send `sig` and wait for the exit: (exit code, seconds it took)."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            await self.client.aclose()
        return code, time.monotonic() - began

    async def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            await self.proc.wait()
        await self.client.aclose()


async def start_daemon(tmp_path: Path, name: str, **settings: str) -> DaemonProcess:
    """Start the daemon with these settings (upper-case names) in its own working directory."""
    port = int(settings.setdefault("API_PORT", str(free_port())))
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "market_data.daemon",
            cwd=workdir,
            env=clean_env(**settings),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    return DaemonProcess(proc, port, log_path, client)
