"""The cluster benchmark's parts (bench/cluster.py): the simulator in a child process, fresh
migrated PostgreSQL databases, daemon processes and their /status."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from market_data.simulator import SimulatorConfig, run_simulator
from market_data.simulator.market import Market
from market_data.storage.sql import open_store

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- the simulator, in its own process ----------------------------------------------------------


def _serve(config: SimulatorConfig, conn: Connection, days: float, cache_hours: int) -> None:
    # Candles are computed on demand and cached; computed before the first run, so every run
    # is served alike (the first would otherwise pay for the generation).
    defaults = Market.__init__.__kwdefaults__
    if defaults is not None:
        defaults["cache_hours"] = cache_hours

    async def main() -> None:
        async with run_simulator(config) as sim:
            now = sim.market.now_ms()
            for spec in config.pairs:
                sim.market.truth(spec.symbol, "1m", now - int((days + 1) * 86_400_000), now)
            conn.send((sim.rest_url, sim.ws_url))
            loop = asyncio.get_running_loop()
            while True:
                ask = await loop.run_in_executor(None, conn.recv)
                if ask == "stop":
                    return
                conn.send(dict(sim.stats.rest_counts))

    asyncio.run(main())


class ChildSimulator:
    def __init__(self, config: SimulatorConfig, days: float) -> None:
        self._parent, child = mp.Pipe()
        hours = int((days + 6) * 24 * len(config.pairs)) + 1000
        self._proc = mp.get_context("spawn").Process(
            target=_serve, args=(config, child, days, hours), daemon=True
        )

    def __enter__(self) -> tuple[str, str]:
        self._proc.start()
        if not self._parent.poll(300):
            raise RuntimeError("the simulator did not start")
        rest_url, ws_url = self._parent.recv()
        return str(rest_url), str(ws_url)

    def rest_counts(self) -> dict[tuple[str, str], int]:
        self._parent.send("stats")
        counts: dict[tuple[str, str], int] = self._parent.recv()
        return counts

    def __exit__(self, *exc: object) -> None:
        self._parent.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()


# --- databases and daemons ----------------------------------------------------------------------


async def create_database() -> str:
    name = f"md_bench_cluster_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    # The schema first (`market-data db upgrade`): every run times the backfill, not the
    # one-off migration the first daemon would otherwise make the others wait for.
    store = open_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()
    return url


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    name: str
    proc: asyncio.subprocess.Process
    client: httpx.AsyncClient
    log_path: Path

    async def status(self) -> dict[str, Any] | None:
        try:
            response = await self.client.get("/status")
            response.raise_for_status()
            status: dict[str, Any] = response.json()
            return status
        except (httpx.HTTPError, ValueError):
            return None  # not up yet

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.client.aclose()


async def start_daemon(workdir: Path, name: str, settings: dict[str, str]) -> Daemon:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITFINEX_", "DATABASE_"))}
    env.update(settings, DAEMON_ID=name, API_PORT=str(port), LOG_LEVEL="WARNING")
    log_path = workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "market_data.daemon",
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    return Daemon(name, proc, client, log_path)


async def poll(what: str, timeout: float, probe: Any, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)
