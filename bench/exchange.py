"""A whole exchange: 300 pairs x (1m, 1h) = 600 channels, a real daemon on SQLite, 10 minutes.

    PYTHONPATH=src .venv/bin/python bench/exchange.py [--pairs 300] [--minutes 10]
    PYTHONPATH=src .venv/bin/python bench/exchange.py --quick      # 40 pairs, 2 minutes

The exchange-shaped simulator (long-tail activity, colon and test pairs, listing dates) runs in
this process at real speed with the real limits (30 REST requests and 20 new WebSocket
connections a minute, 25 channels a connection), so its truth is at hand. The daemon runs as its
own process (`python -m market_data.daemon`) on a temporary SQLite file, with 1m and 1h on the
first `--pairs` listed pairs that are not test pairs (`--symbols-all`: BITFINEX_SYMBOLS=all),
BACKFILL_DAYS=1 and gap detection/repair every `--gap-minutes`. Measured, against the targets:
seconds until every channel is subscribed (<= 90 s), backfill requests against the minimum
(sum over series of ceil(periods / 10,000) over the listed part of the range), daemon RSS
(<= 300 MB, end within 10 % of mid) and CPU (<= 25 % of one core) from /proc, /status p50/p99
over 200 requests at the end (p50 <= 20 ms), SQLite bytes per stored candle, open gaps after
each repair cycle split into no-trade only (the truth has no trade in them; <= 1 per series)
and real loss, closed candles missing since the start, and every stored closed candle against
the truth.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.e2e.daemon_process import DaemonProcess, clean_env, free_port, wait_for  # noqa: E402

from market_data.models import SeriesKey  # noqa: E402
from market_data.simulator import SimulatorConfig, exchange_pairs, run_simulator  # noqa: E402
from market_data.simulator.exchange import is_test_pair  # noqa: E402
from market_data.simulator.market import Market  # noqa: E402
from market_data.storage.sql import open_store  # noqa: E402
from market_data.timeframes import MINUTE_MS, align, count_periods, next_open  # noqa: E402

TIMEFRAMES = ("1m", "1h")
PAGE = 10_000
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    at: float
    rss: int
    cpu_s: float


@dataclass
class Run:
    subscribed_s: float | None = None
    backfilled_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    cycles: list[tuple[int, int, int, int]] = field(default_factory=list)  # run, series, nt, loss
    status_ms: list[float] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def proc_sample(pid: int, began: float) -> Sample:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime + stime
    return Sample(time.monotonic() - began, rss_pages * os.sysconf("SC_PAGE_SIZE"), cpu)


def simulator_pairs(seed: int, wanted: int) -> tuple[Any, ...]:
    """An exchange with at least `wanted` traded pairs besides its test pairs."""
    count = wanted
    while True:
        specs = exchange_pairs(seed, count)
        if sum(not is_test_pair(s.pair) for s in specs) >= wanted:
            return specs
        count += 1


def backfill_minimum(market: Market, symbols: list[str], start_ms: int, now_ms: int) -> int:
    total = 0
    for symbol in symbols:
        first = max(start_ms, market.listing_ms(symbol))
        for tf in TIMEFRAMES:
            lo = align(first, tf) if first == align(first, tf) else next_open(align(first, tf), tf)
            hi = next_open(align(now_ms, tf), tf)  # the open period too
            periods = count_periods(lo, hi, tf) if lo < hi else 0
            total += math.ceil(periods / PAGE)
    return total


async def classify_gaps(store: Any, market: Market) -> tuple[int, int, Counter[SeriesKey]]:
    """Open gaps: (no-trade only, real loss, no-trade only per series)."""
    gaps = await store.list_gaps(repaired=False, limit=100_000)
    no_trade, loss, per_series = 0, 0, Counter[SeriesKey]()
    for gap in gaps:
        if market.truth(gap.symbol, gap.timeframe, gap.gap_start, gap.gap_end):
            loss += 1
        else:
            no_trade += 1
            per_series[gap.series] += 1
    return no_trade, loss, per_series


async def compare_truth(
    store: Any, market: Market, symbols: list[str], since_ms: int, end_ms: int
) -> tuple[int, int, int, int]:
    """(stored closed candles, of those unequal to the truth, truth candles since the daemon's
    start missing from the database, truth candles checked)."""
    checked = unequal = missing = stored = 0
    for symbol in symbols:
        for tf in TIMEFRAMES:
            key = SeriesKey(market.pairs[market.index_of(symbol)].symbol, tf)
            first = await store.first_candle(key)
            if first is None:
                continue
            rows = await store.candles_in_range(key, first.ts, end_ms, limit=1_000_000)
            truth = {c.ts: c for c in market.truth(key.symbol, tf, first.ts, end_ms)}
            checked += len(truth)
            ours = {c.ts for c in rows}
            for c in rows:
                if not c.final:
                    continue
                stored += 1
                t = truth.get(c.ts)
                fields = ("open", "high", "low", "close", "volume")
                if t is None or any(getattr(c, f) != getattr(t, f) for f in fields):
                    unequal += 1
                    if unequal <= 5:
                        print(f"  unequal: stored {c}\n           truth  {t}", flush=True)
            # A candle that closed in the last two minutes may still be on its way (flushes).
            settled = end_ms - 2 * MINUTE_MS
            missing += sum(
                1
                for ts in truth
                if ts >= since_ms and next_open(ts, tf) <= settled and ts not in ours
            )
    return stored, unequal, missing, checked


async def spawn(workdir: Path, profile: str | None, **settings: str) -> DaemonProcess:
    """The daemon as its own process (under cProfile when `profile` names the output file)."""
    port = free_port()
    settings["API_PORT"] = str(port)
    settings["PYTHONPATH"] = str(ROOT / "src")  # this checkout's code, whatever is installed
    log_path = workdir / "daemon.log"
    wrap = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *wrap,
            "-m",
            "market_data.daemon",
            cwd=workdir,
            env=clean_env(**settings),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    return DaemonProcess(proc, port, log_path, client)


async def watch(
    daemon: DaemonProcess, store: Any, market: Market, args: Any, run: Run, began: float
) -> None:
    channels = args.pairs * len(TIMEFRAMES)
    seen_runs = 0
    while (elapsed := time.monotonic() - began) < args.minutes * 60:
        if not daemon.alive:
            raise SystemExit(f"the daemon died:\n{daemon.log()[-3000:]}")
        run.samples.append(proc_sample(daemon.proc.pid, began))
        try:
            status = await daemon.json("/status")
        except Exception as exc:  # the daemon is busy starting; the next round asks again
            print(f"  t={elapsed:4.0f}s /status: {exc!r}", flush=True)
            await asyncio.sleep(2.0)
            continue
        ws = status["websocket"]
        if run.subscribed_s is None and ws["subscriptions"] >= channels:
            run.subscribed_s = elapsed
            print(f"  t={elapsed:4.0f}s all {channels} channels subscribed", flush=True)
        if run.backfilled_s is None and status["backfill"]["state"] == "done":
            run.backfilled_s = elapsed
            print(f"  t={elapsed:4.0f}s backfill done", flush=True)
        repair = next(lp for lp in status["loops"] if lp["name"] == "gap_repair")
        if repair["runs"] > seen_runs:
            seen_runs = repair["runs"]
            no_trade, loss, per_series = await classify_gaps(store, market)
            worst = max(per_series.values(), default=0)
            run.cycles.append((seen_runs, worst, no_trade, loss))
            print(
                f"  t={elapsed:4.0f}s repair cycle {seen_runs}: open gaps no-trade only "
                f"{no_trade} (max {worst} per series), real loss {loss}",
                flush=True,
            )
        if int(elapsed) % 60 < (1 if run.subscribed_s is None else 5):
            rss = run.samples[-1].rss / 2**20
            print(
                f"  t={elapsed:4.0f}s subscribed {ws['subscriptions']}/{channels} "
                f"connections {ws['connections']} rss {rss:.0f} MB backfill "
                f"{status['backfill']['state']}",
                flush=True,
            )
        await asyncio.sleep(1.0 if run.subscribed_s is None else 5.0)
    run.samples.append(proc_sample(daemon.proc.pid, began))
    run.status = await daemon.json("/status")
    # Timed from a process of its own: this one's event loop is busy being the exchange.
    timer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TIME_STATUS,
        f"http://127.0.0.1:{daemon.port}/status",
        "200",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await timer.communicate()
    run.status_ms = [float(v) for v in out.split()]


TIME_STATUS = """
import sys, time, httpx
with httpx.Client(timeout=30) as client:
    for _ in range(int(sys.argv[2])):
        t0 = time.perf_counter()
        client.get(sys.argv[1]).raise_for_status()
        print((time.perf_counter() - t0) * 1000)
"""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> int:
    specs = simulator_pairs(args.seed, args.pairs)
    config = SimulatorConfig(seed=args.seed, pairs=specs, churn_minutes=args.churn_minutes)
    with tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp:
        db = Path(tmp) / "bench.db"
        async with run_simulator(config) as sim:
            market = sim.market
            listed = [p for p in market.exchange_pairs() if not is_test_pair(p)][: args.pairs]
            start_ms = market.now_ms()
            settings = {
                "DATABASE_URL": f"sqlite:///{db}",
                "BITFINEX_REST_URL": sim.rest_url,
                "BITFINEX_WS_URL": sim.ws_url,
                "BITFINEX_SYMBOLS": "all" if args.symbols_all else ",".join(listed),
                "BITFINEX_TIMEFRAMES": ",".join(TIMEFRAMES),
                "BACKFILL_DAYS": str(args.backfill_days),
                "RATE_LIMIT_DELAY": str(args.rate_limit_delay),
                "GAP_DETECTION_INTERVAL_MINUTES": str(args.gap_minutes),
                "GAP_REPAIR_INTERVAL_MINUTES": str(args.gap_minutes),
            }
            print(
                f"{len(listed)} pairs x {len(TIMEFRAMES)} timeframes against {len(specs)} "
                f"listed, {args.minutes:g} min, BACKFILL_DAYS={args.backfill_days:g}, "
                f"RATE_LIMIT_DELAY={args.rate_limit_delay:g}, gaps every {args.gap_minutes:g} min",
                flush=True,
            )
            began = time.monotonic()
            daemon = await spawn(Path(tmp), args.profile, **settings)
            run = Run()
            try:
                await wait_for(lambda: daemon.json("/health"), 120, "the daemon's API")
                store = open_store(f"sqlite:///{db}")
                try:
                    await watch(daemon, store, market, args, run, began)
                    end_ms = align(market.now_ms(), "1m")
                    truth = await compare_truth(store, market, listed, start_ms, end_ms)
                    candles = sum(s["candle_count"] for s in run.status["series"])
                finally:
                    await store.close()
                minimum = backfill_minimum(
                    market, listed, start_ms - int(args.backfill_days * 86_400_000), start_ms
                )
                sim_requests = sim.stats.rest_requests("candles_hist")
            finally:
                await daemon.stop()
                log = daemon.log()
                (Path(tempfile.gettempdir()) / "bench-exchange-daemon.log").write_text(log)
                errors = log.count("Traceback") + log.count(" ERROR ")
                print(f"daemon log: {errors} errors/tracebacks (copy in /tmp)", flush=True)
        size = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*"))
    return report(args, run, truth, candles, size, minimum, sim_requests)


def report(
    args: argparse.Namespace,
    run: Run,
    truth: tuple[int, int, int, int],
    candles: int,
    size: int,
    minimum: int,
    sim_requests: int,
) -> int:
    channels = args.pairs * len(TIMEFRAMES)
    samples = run.samples
    span = samples[-1].at - samples[0].at
    cpu = (samples[-1].cpu_s - samples[0].cpu_s) / max(span, 1e-9)
    rss = [s.rss / 2**20 for s in samples]
    rss_start, rss_mid, rss_end = rss[len(rss) // 10], rss[len(rss) // 2], rss[-1]
    p50, p99 = statistics.median(run.status_ms), quantile(run.status_ms, 0.99)
    backfill = run.status["backfill"]
    done = [s for s in backfill["series"] if s["state"] in ("success", "skipped")]
    requests = sum(int(s["requests"]) for s in backfill["series"])
    stored, unequal, missing, checked = truth
    worst_no_trade = max((c[1] for c in run.cycles), default=0)
    print("\nfigure                                   value")
    rows = [
        ("channels subscribed after (s)", _f(run.subscribed_s)),
        ("backfill state / series done", f"{backfill['state']} / {len(done)} of {channels}"),
        ("backfill done after (s)", _f(run.backfilled_s)),
        (
            "backfill requests / minimum",
            f"{requests} / {minimum} = {requests / max(1, minimum):.2f}",
        ),
        (
            "all candle requests / minimum",
            f"{sim_requests} / {minimum} = {sim_requests / max(1, minimum):.2f}",
        ),
        ("daemon RSS start / mid / end (MB)", f"{rss_start:.0f} / {rss_mid:.0f} / {rss_end:.0f}"),
        ("daemon CPU (% of one core)", f"{cpu:.1%}"),
        ("/status p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f} ({len(run.status['series'])} series)"),
        ("SQLite bytes per candle", f"{size / max(1, candles):.0f} ({size:,} B, {candles:,})"),
        ("repair cycles (no-trade max/series)", ", ".join(f"{c[1]}" for c in run.cycles) or "-"),
        (
            "open gaps last cycle: no-trade / loss",
            f"{run.cycles[-1][2]} / {run.cycles[-1][3]}" if run.cycles else "-",
        ),
        ("closed candles stored / unequal", f"{stored:,} / {unequal}"),
        (
            "unchecked final candles, oldest (s)",
            _f(run.status["websocket"]["details"].get("unchecked_final_oldest_age_seconds")),
        ),
        ("closed since start missing (of truth)", f"{missing} (of {checked:,} checked)"),
    ]
    for name, value in rows:
        print(f"{name:40} {value}")
    targets = [
        (
            "all channels subscribed <= 90 s",
            run.subscribed_s is not None and run.subscribed_s <= 90,
        ),
        ("no-trade-only open gaps <= 1 per series", bool(run.cycles) and worst_no_trade <= 1),
        (
            "RSS <= 300 MB and flat (end within 10 % of mid)",
            max(rss) <= 300 and abs(rss_end / rss_mid - 1) <= 0.10,
        ),
        ("daemon CPU <= 25 % of one core", cpu <= 0.25),
        ("/status p50 <= 20 ms", p50 <= 20),
        ("every stored closed candle equals the truth", unequal == 0),
        ("no closed candle since the start missing", missing == 0),
    ]
    print("\ntargets")
    for name, ok in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in targets) else 1


def _f(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="pairs besides test pairs")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="40 pairs, 2 minutes")
    parser.add_argument("--backfill-days", type=float, default=1.0)
    parser.add_argument(
        "--rate-limit-delay", type=float, default=2.5, help="24 a minute: under the 30 allowed"
    )
    parser.add_argument("--gap-minutes", type=float, default=2.0, help="detection and repair")
    parser.add_argument("--churn-minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", help="run the daemon under cProfile, output to this file")
    parser.add_argument("--symbols-all", action="store_true", help="BITFINEX_SYMBOLS=all")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.minutes, args.gap_minutes = 40, 2.0, 0.5
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
