"""Simulator throughput: candles/s served by `hist`, and WebSocket updates/s in firehose mode.

    .venv/bin/python bench/simulator.py [--requests 10] [--connections 20] [--seconds 5]
                                        [--market exchange]

The simulator runs in its own process (`market-data simulate`), as it would beside a daemon, so
the client's parsing does not share its CPU. Targets: >= 200,000 candles/s from `hist` with
limit 10000, >= 30,000 updates/s over 500 channels. With `--market exchange` the simulator
serves a whole exchange (300 pairs), and `hist` is also measured on tail pairs, which trade in
few minutes, so a 10000-candle page spans months of mostly empty hours (no target: figures only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
from websockets.asyncio.client import connect

from market_data.simulator.exchange import exchange_pairs

HIST_TARGET = 200_000
WS_TARGET = 30_000
TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1D", "1W", "14D", "1M")
PAIRS = ("tBTCUSD", "tETHUSD", "tSOLUSD", "tDOGE:USD", "tZRXUSD", "tAPTUSD")


@contextmanager
def simulator_process(
    firehose: bool, market: str = "default"
) -> Iterator[tuple[str, str, psutil.Process]]:
    args = [
        sys.executable,
        "-m",
        "market_data",
        "simulate",
        "--port",
        "0",
        "--rate-limit",
        "0",
        "--ws-connection-limit",
        "0",
        "--market",
        market,
    ]
    if firehose:
        args.append("--firehose")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        rest = ws = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := re.match(r"REST\s+(\S+)", line):
                rest = match.group(1)
            if match := re.match(r"WebSocket\s+(\S+)", line):
                ws = match.group(1)
                break
        if not rest or not ws:
            raise RuntimeError("the simulator did not start")
        yield rest, ws, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def bench_hist(
    rest_url: str, requests: int, server: psutil.Process, pair: str = "tBTCUSD", label: str = ""
) -> float:
    async with httpx.AsyncClient(base_url=rest_url, timeout=60) as client:
        now = int(time.time() * 1000)
        rows = 0
        cpu = cpu_seconds(server)
        start = time.perf_counter()
        for i in range(requests):
            # Distinct, non-overlapping windows: nothing is served from a warm cache.
            end = now - i * 10_000 * 60_000
            resp = await client.get(
                f"/v2/candles/trade:1m:{pair}/hist", params={"limit": 10000, "end": end, "sort": -1}
            )
            resp.raise_for_status()
            rows += len(json.loads(resp.content))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server) - cpu
    rate = rows / elapsed
    # The target is for a liquid pair; a tail pair's page costs months of empty hours.
    verdict = (
        "no target"
        if label
        else (f"target {HIST_TARGET:,}: {'OK' if rate >= HIST_TARGET else 'MISSED'}")
    )
    print(
        f"hist{label}: {rows} candles in {requests} requests, {elapsed:.2f}s -> "
        f"{rate:,.0f} candles/s ({verdict}); "
        f"server CPU {cpu:.2f}s = {rows / max(cpu, 1e-9):,.0f} candles per CPU-second"
    )
    return rate


async def _client(
    ws_url: str,
    channels: int,
    ready: asyncio.Event,
    stop: asyncio.Event,
    counts: list[int],
    slot: int,
    subscribed: list[int],
) -> None:
    keys = [f"trade:{tf}:{pair}" for pair in PAIRS for tf in TIMEFRAMES][:channels]
    async with connect(ws_url, max_queue=None) as ws:
        for key in keys:
            await ws.send(json.dumps({"event": "subscribe", "channel": "candles", "key": key}))
        acks = 0
        while acks < len(keys):
            frame = await ws.recv()
            if frame.startswith('{"event":"subscribed"'):
                acks += 1
        subscribed[0] += 1
        await ready.wait()
        while not stop.is_set():
            frame = await ws.recv()
            if frame[0] == "[" and not frame.endswith('"hb"]'):
                counts[slot] += 1


async def bench_ws(ws_url: str, connections: int, seconds: float, server: psutil.Process) -> float:
    ready, stop = asyncio.Event(), asyncio.Event()
    counts = [0] * connections
    subscribed = [0]
    tasks = [
        asyncio.create_task(_client(ws_url, 25, ready, stop, counts, i, subscribed))
        for i in range(connections)
    ]
    while subscribed[0] < connections:
        await asyncio.sleep(0.05)
        for task in tasks:
            if task.done():
                task.result()
    ready.set()
    await asyncio.sleep(1.0)  # let every connection reach its pace
    before = sum(counts)
    cpu = cpu_seconds(server)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    received = sum(counts) - before
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(server) - cpu
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rate = received / elapsed
    print(
        f"ws firehose: {connections} connections x 25 channels, {received} updates in "
        f"{elapsed:.1f}s -> {rate:,.0f} updates/s "
        f"(target {WS_TARGET:,}: {'OK' if rate >= WS_TARGET else 'MISSED'}); "
        f"server CPU {cpu:.2f}s = {received / max(cpu, 1e-9):,.0f} updates per CPU-second"
    )
    return rate


def tail_pairs() -> list[tuple[str, float]]:
    """Pairs of the exchange market (seed 1, as `simulate` defaults) at three activity levels."""
    specs = sorted(exchange_pairs(1), key=lambda spec: -spec.trade_probability)
    traded = [spec for spec in specs if not spec.pair.startswith("TEST")]
    picks = (traded[len(traded) // 10], traded[len(traded) // 2], traded[-1])
    return [(spec.pair, spec.trade_probability) for spec in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--market", choices=("default", "exchange"), default="default")
    args = parser.parse_args()
    print(
        f"load average before: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())} "
        f"on {psutil.cpu_count()} CPUs (other work on the machine lowers these figures)"
    )
    with simulator_process(firehose=False, market=args.market) as (rest_url, _, server):
        hist = asyncio.run(bench_hist(rest_url, args.requests, server))
        if args.market == "exchange":
            for pair, share in tail_pairs():
                asyncio.run(
                    bench_hist(
                        rest_url,
                        max(1, args.requests // 5),
                        server,
                        f"t{pair}",
                        f" {pair} (trades in {share:.1%} of minutes)",
                    )
                )
    with simulator_process(firehose=True, market=args.market) as (_, ws_url, server):
        updates = asyncio.run(bench_ws(ws_url, args.connections, args.seconds, server))
    ok = hist >= HIST_TARGET and updates >= WS_TARGET
    print(f"hist/target {hist / HIST_TARGET:.2f}x, ws/target {updates / WS_TARGET:.2f}x")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
