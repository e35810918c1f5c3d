"""Heavy concurrent reads against the API over real sockets: does /health stay fast and honest?

    .venv/bin/python bench/api.py --concurrent 300      (this module does the work)

The API runs in a child process (uvicorn on loopback, the daemon's parts built from settings,
as in the running daemon), so the client's own work does not sit in the server's event loop.
`--concurrent` clients each want one 10,000-row /candles page; a 503 is retried after its
Retry-After (1 s when there is none), as a well-behaved client does. Meanwhile /health is polled
every 100 ms on a connection of its own. Printed: /health latency idle (the baseline, same run)
and under load, how often it said `database: down` or answered 503, and the time each client
took to get its page. Target: /health p99 under 1 s under load, never `down`.

Run it with another checkout's interpreter (`/work/main/.venv/bin/python bench/api.py
--concurrent 300`) to measure that code: the child process uses the same interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import httpx

HEALTH_EVERY_S = 0.1
MAX_TRIES = 50


def _pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class HealthSamples:
    ms: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    down: int = 0


async def _poll_health(base: str, stop: asyncio.Event) -> HealthSamples:
    into = HealthSamples()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            began = time.perf_counter()
            try:
                response = await client.get("/health")
            except httpx.HTTPError as exc:
                into.codes[type(exc).__name__] = into.codes.get(type(exc).__name__, 0) + 1
            else:
                into.ms.append((time.perf_counter() - began) * 1000)
                code = str(response.status_code)
                into.codes[code] = into.codes.get(code, 0) + 1
                if response.json()["checks"]["database"]["status"] == "down":
                    into.down += 1
            await asyncio.sleep(HEALTH_EVERY_S)
    return into


def poll_health(base: str) -> None:
    """The health poller's process (its own event loop and GIL, so the load clients' work is
    not counted in /health's latency): polls until stdin closes, then prints the samples."""

    async def run() -> HealthSamples:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read() or stop.set())
        return await _poll_health(base, stop)

    print(json.dumps(asdict(asyncio.run(run()))))


class HealthPoller:
    def __init__(self, base: str) -> None:
        self._child = subprocess.Popen(
            [sys.executable, __file__, "--poll-health", base],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> HealthSamples:
        out, _ = self._child.communicate(timeout=60)
        return HealthSamples(**json.loads(out))


@dataclass
class ClientResult:
    seconds: float
    served: bool
    refusals: int  # 503 answers before the page came
    errors: list[str]
    dropped: int = 0  # keep-alive connections closed under the request (retried)


async def _one_client(client: httpx.AsyncClient, params: dict[str, str], rows: int) -> ClientResult:
    began = time.perf_counter()
    refusals = dropped = 0
    errors: list[str] = []
    for _ in range(MAX_TRIES):
        try:
            async with client.stream("GET", "/candles", params=params) as response:
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                if response.status_code == 200:
                    assert size > rows * 50, size
                    return ClientResult(
                        time.perf_counter() - began, True, refusals, errors, dropped
                    )
                if response.status_code != 503:
                    errors.append(str(response.status_code))
                    break
                refusals += 1
                if "retry-after" not in response.headers:
                    errors.append("503 without Retry-After")
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # The server closed an idle keep-alive connection as we reused it (a race every
            # HTTP client meets); a browser retries, so do we, and count it.
            dropped += 1
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
            break
    return ClientResult(time.perf_counter() - began, False, refusals, errors, dropped)


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(200):
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not come up")


async def load(url: str, first_ms: int, per_series: int, series: int, concurrent: int) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, str(port), str(series)],
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_up(base)
        poller = HealthPoller(base)
        await asyncio.sleep(3.0)
        idle = poller.finish()

        rng = random.Random(11)
        page = min(10_000, per_series)
        limits = httpx.Limits(max_connections=concurrent + 10, max_keepalive_connections=concurrent)
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
            poller = HealthPoller(base)
            began = time.perf_counter()
            jobs = []
            for _ in range(concurrent):
                start = first_ms + rng.randrange(max(1, per_series - page)) * 60_000
                params = {
                    "symbol": f"S{rng.randrange(series):03d}USD",
                    "timeframe": "1m",
                    "start": str(start),
                    "end": str(start + page * 60_000),
                    "limit": str(page),
                }
                jobs.append(_one_client(client, params, page))
            results = await asyncio.gather(*jobs)
            wall = time.perf_counter() - began
            loaded = poller.finish()
    finally:
        child.terminate()
        child.wait(10)

    served = [r.seconds * 1000 for r in results if r.served]
    errors = [e for r in results for e in r.errors]
    print(
        f"\n{concurrent} concurrent clients, one {page:,}-row /candles page each "
        f"(PostgreSQL, API over loopback in a child process), all done in {wall:.1f} s"
    )
    print(f"{'':34} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  n")
    for name, samples in (
        ("/health idle (baseline)", idle.ms),
        ("/health under load", loaded.ms),
        ("/candles, time to get the page", served),
    ):
        print(
            f"{name:34} {_pct(samples, 0.5):9.1f} {_pct(samples, 0.99):9.1f} "
            f"{max(samples, default=float('nan')):9.1f}  {len(samples)}"
        )
    print(
        f"/health under load: answers {dict(sorted(loaded.codes.items()))}, "
        f"'database: down' {loaded.down} times"
    )
    print(
        f"/candles: {len(served)}/{concurrent} served, "
        f"{sum(r.refusals for r in results)} answers 503 (retried after Retry-After), "
        f"errors: {errors[:5] if errors else 'none'}"
    )
    health_p99 = _pct(loaded.ms, 0.99)
    ratio = health_p99 / _pct(idle.ms, 0.99)
    ok = health_p99 < 1000 and loaded.down == 0 and not errors and len(served) == concurrent
    print(
        f"/health p99 under load {health_p99:.1f} ms = x{ratio:.1f} idle (target < 1000 ms, "
        f"never down, every page served): {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def serve(url: str, port: int, series: int) -> None:
    """The child: the daemon's parts built from settings, its API served on loopback."""
    from market_data.api.server import bind, build_server
    from market_data.config import load_settings
    from market_data.daemon import Daemon

    async def run() -> None:
        settings = load_settings(
            env_file=None,
            database_url=url,
            bitfinex_timeframes="1m",
            ws_ingestion_enabled=False,
            bitfinex_symbols=",".join(f"S{i:03d}USD" for i in range(series)),
        )
        daemon = Daemon(settings)
        daemon.state.database_ready = True
        daemon.state.phase = "running"
        await daemon.store.upgrade()  # as the running daemon would have, before serving
        sock = bind("127.0.0.1", port)
        await build_server(daemon).serve(sockets=[sock])

    asyncio.run(run())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=3, metavar=("URL", "PORT", "SERIES"))
    parser.add_argument("--poll-health", metavar="BASE_URL")
    args = parser.parse_args()
    if args.poll_health:
        poll_health(args.poll_health)
    else:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
