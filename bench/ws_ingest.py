"""WebSocket ingestion throughput, latency and memory, end to end into SQLite and PostgreSQL.

    .venv/bin/python bench/ws_ingest.py [--seconds 600] [--channels 500] [--backend both]

The simulator runs in its own process (pinned to the second core when there is one) in firehose
mode: every channel gets a changed candle as fast as the sockets take them. The ingestion runs
here, on one core, exactly as the daemon runs it (shards -> bounded queue -> writer -> sink ->
store). Reported per window and overall: updates handled per second, rows committed per second,
update-to-commit latency p50/p99 (receive time -> commit), RSS. Targets: >= 10,000 updates/s,
p99 <= WS_SAVE_FLUSH_SECONDS + 100 ms, RSS flat (last window within 5 % of the second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from market_data.config import Settings
from market_data.exchanges.bitfinex import BitfinexExchange, BitfinexRest
from market_data.rate_limiter import RateLimiter
from market_data.services.live.ingestion import WsIngestion
from market_data.services.live.latency import LatencyHistogram
from market_data.services.sink import CandleSink
from market_data.simulator import SimulatorConfig, run_simulator
from market_data.simulator.faults import Faults
from market_data.simulator.pairs import PairSpec
from market_data.storage.sql import open_store

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1D", "1W"]
WARMUP_S = 15.0


# --- the simulator, in its own process ----------------------------------------------------------


def _pairs(count: int) -> tuple[PairSpec, ...]:
    return tuple(PairSpec(f"B{i:03d}:USD", 100.0 + i) for i in range(count))


def _simulator_main(pair_count: int, port_box: Any, stop: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})

    async def main() -> None:
        config = SimulatorConfig(
            pairs=_pairs(pair_count),
            rest_rate_limit=0,
            ws_connection_limit=0,
            ws_channel_limit=30,
            history_days=2,
            faults=Faults(firehose=True),
        )
        async with run_simulator(config) as sim:
            port_box.put(sim.port)
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    updates: int
    rows: int
    rss: int
    cpu: float
    counts: list[int]


@dataclass
class Window:
    start: float
    end: float
    updates_per_s: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: float
    cpu_share: float


@dataclass
class Result:
    backend: str
    channels: int
    connections: int
    windows: list[Window] = field(default_factory=list)
    updates_per_s: float = 0.0
    updates_per_cpu_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_queue: int = 0
    queue_bound: int = 0
    rss_drift: float = 0.0


def _quantiles(counts: list[int]) -> tuple[float | None, float | None]:
    hist = LatencyHistogram()
    hist.counts = counts
    hist.total = sum(counts)
    hist.max_ms = hist.bounds_ms[-1]
    return hist.quantile(0.5), hist.quantile(0.99)


def _window(a: Sample, b: Sample) -> Window:
    span = max(1e-9, b.at - a.at)
    p50, p99 = _quantiles([y - x for x, y in zip(a.counts, b.counts, strict=True)])
    return Window(
        a.at,
        b.at,
        (b.updates - a.updates) / span,
        (b.rows - a.rows) / span,
        p50,
        p99,
        b.rss / 2**20,
        (b.cpu - a.cpu) / span,
    )


async def _run_one(
    backend: str, url: str, ws_url: str, rest_url: str, args: argparse.Namespace, pair_count: int
) -> Result:
    settings = Settings(
        database_url=url,
        bitfinex_symbols=[p.pair for p in _pairs(pair_count)],
        bitfinex_timeframes=TIMEFRAMES,
        bitfinex_ws_url=ws_url,
        bitfinex_rest_url=rest_url,
        ws_max_subscriptions_per_connection=30,
        ws_save_batch_size=args.batch,
        ws_save_flush_seconds=args.flush,
        ws_catchup_lookback_minutes=5,
        rate_limit_delay=0,
    )
    store = open_store(url)
    await store.upgrade()
    proc = psutil.Process()
    limiter = RateLimiter.from_settings(settings)
    async with BitfinexRest(rest_url, limiter) as rest:
        exchange = BitfinexExchange(rest, settings.bitfinex_ws_url)
        ingestion = WsIngestion(settings, store, exchange, CandleSink(store, settings))
        stop = asyncio.Event()
        task = asyncio.create_task(ingestion.run(stop), name="ws-ingestion")
        state = ingestion.state
        samples: list[Sample] = []
        began = time.monotonic()
        window_s = min(60.0, max(10.0, args.seconds / 6))
        next_report = began + WARMUP_S + window_s
        while time.monotonic() - began < args.seconds and not task.done():
            await asyncio.sleep(1.0)
            cpu = proc.cpu_times()
            samples.append(
                Sample(
                    time.monotonic() - began,
                    state.writer.updates,
                    state.writer.candles_written,
                    proc.memory_info().rss,
                    cpu.user + cpu.system,
                    list(state.writer.latency.counts),
                )
            )
            if time.monotonic() >= next_report:
                next_report += window_s
                w = _window(_at(samples, samples[-1].at - window_s), samples[-1])
                print(
                    f"  [{backend}] t={w.end:5.0f}s {w.updates_per_s:9,.0f} upd/s "
                    f"{w.rows_per_s:8,.0f} rows/s p50 {_ms(w.p50_ms)} p99 {_ms(w.p99_ms)} "
                    f"rss {w.rss_mb:6.1f} MB cpu {w.cpu_share:4.0%}",
                    flush=True,
                )
        stop.set()
        await asyncio.wait_for(task, 60)
        result = Result(
            backend,
            len(settings.native_series()),
            len(state.connections),
            max_queue=state.queue_max_depth,
            queue_bound=state.queue_bound,
        )
    await store.close()
    steady = [s for s in samples if s.at >= WARMUP_S]
    if len(steady) >= 2:
        whole = _window(steady[0], steady[-1])
        result.updates_per_s = whole.updates_per_s
        result.updates_per_cpu_s = whole.updates_per_s / max(whole.cpu_share, 1e-9)
        result.p50_ms, result.p99_ms = whole.p50_ms, whole.p99_ms
        edges = [steady[0].at + i * window_s for i in range(int(len(steady) // window_s) + 1)]
        for lo, hi in itertools.pairwise(edges):
            result.windows.append(_window(_at(steady, lo), _at(steady, hi)))
        if len(result.windows) >= 2:
            second, last = result.windows[min(1, len(result.windows) - 1)], result.windows[-1]
            result.rss_drift = last.rss_mb / second.rss_mb - 1
    return result


def _at(samples: list[Sample], t: float) -> Sample:
    return min(samples, key=lambda s: abs(s.at - t))


def _ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.1f}"


@contextlib.asynccontextmanager
async def _database(backend: str) -> Any:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    name = f"bench_ws_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {0})  # the ingestion gets one core
    pair_count = -(-args.channels // len(TIMEFRAMES))
    ctx = mp.get_context("spawn")
    port_box, stop = ctx.Queue(), ctx.Event()
    sim = ctx.Process(target=_simulator_main, args=(pair_count, port_box, stop), daemon=True)
    sim.start()
    port = await asyncio.to_thread(port_box.get, True, 60)
    ws_url, rest_url = f"ws://127.0.0.1:{port}/ws/2", f"http://127.0.0.1:{port}"
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    try:
        for backend in backends:
            print(
                f"{backend}: {pair_count * len(TIMEFRAMES)} channels for {args.seconds:g} s "
                f"(batch {args.batch}, flush {args.flush:g} s)",
                flush=True,
            )
            async with _database(backend) as url:
                results.append(await _run_one(backend, url, ws_url, rest_url, args, pair_count))
    finally:
        stop.set()
        sim.join(10)
    target_p99 = args.flush * 1000 + 100
    ok = True
    print(
        "\nbackend   channels conns  updates/s  upd/cpu-s   p50 ms   p99 ms  queue max/bound "
        " RSS drift"
    )
    for r in results:
        print(
            f"{r.backend:9} {r.channels:8} {r.connections:5} {r.updates_per_s:10,.0f} "
            f"{r.updates_per_cpu_s:10,.0f} {_ms(r.p50_ms)}   {_ms(r.p99_ms)} "
            f"{r.max_queue:7}/{r.queue_bound:<7} {r.rss_drift:+9.1%}"
        )
        ok &= r.updates_per_s >= 10_000 and (r.p99_ms or 1e9) <= target_p99
        ok &= abs(r.rss_drift) <= 0.05
    print(
        f"targets: >= 10,000 updates/s, p99 <= {target_p99:.0f} ms, RSS drift within 5 %: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--channels", type=int, default=500)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--batch", type=int, default=200, help="WS_SAVE_BATCH_SIZE")
    parser.add_argument("--flush", type=float, default=2.0, help="WS_SAVE_FLUSH_SECONDS")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
