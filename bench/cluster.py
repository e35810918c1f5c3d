"""Cluster benchmark: the first backfill's wall time with 1, 2 and 3 daemons on one PostgreSQL
database, and the takeover time after a SIGKILL.

    .venv/bin/python bench/cluster.py          # 24 pairs x 1m,5m,15m,30m, 7 days: ~90 s alone
    .venv/bin/python bench/cluster.py --days 3 --daemons 1,3 --no-takeover  # a quicker run

(a) backfill: N daemon processes (N = 1, 2, 3; a fresh, migrated database each run) start
    together on one PostgreSQL database, each from its own loopback address (BITFINEX_SOURCE_ADDRESS
    127.0.0.2, .3, .4) and with RATE_LIMIT_DELAY=--delay; the simulator (a child process, its
    candles computed before the first run) admits --rest-limit requests per minute per client
    address, so one address's budget is what binds and more daemons go faster only by having
    more addresses. Timed from the start until the last backfill job ended (every series'
    history stored; the speedup is computed on this) and until every daemon's /status said its
    backfill is done (each waits until the items others claimed are done too), then checked
    against the database: the same candles in every run, requests used against the minimum
    (one 10,000-candle page per 10,000 stored candles per series). The live stream is off
    here: its catch-up requests would share the budget with the backfill. The default mix
    (about 120 requests of 2,200 candles) keeps the run bound by each address's budget rather
    than by the CPU, which the daemons, the simulator and PostgreSQL share on one machine.
    Target: 3 daemons >= 2.7 x faster than 1.
(b) takeover: 3 daemons with the live stream on (a short backfill) hold a third of the
    channels each; one is SIGKILLed; timed until the survivors' subscribed shards carry every
    channel again. Target: <= LEASE_TTL_SECONDS (--ttl) + 30 s.
Temporary databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from market_data.simulator import SimulatorConfig
from market_data.simulator.pairs import pairs_by_name

# A sibling module: `python bench/cluster.py` puts bench/ first on the path.
from cluster_parts import (  # isort: skip
    ADMIN_URL,
    ChildSimulator,
    Daemon,
    create_database,
    drop_database,
    poll,
    start_daemon,
)

PAGE = 10_000
SPEEDUP_TARGET = 2.7
TAKEOVER_SLACK_S = 30.0
SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Three-letter pairs: no colon spelling needed; the simulator gives unknown names a liquid spec.
# fmt: off
NAMES = [
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOT", "LTC", "UNI", "EOS", "FIL", "TRX", "XLM",
    "NEO", "XMR", "ZEC", "ETC", "BAT", "OMG", "IOT", "DAI", "XTZ", "BSV", "BCH", "LEO",
]
# fmt: on


def daemon_settings(
    args: argparse.Namespace, url: str, urls: tuple[str, str], i: int, live: bool
) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "BITFINEX_REST_URL": urls[0],
        "BITFINEX_WS_URL": urls[1],
        "BITFINEX_SOURCE_ADDRESS": SOURCES[i],
        "BITFINEX_SYMBOLS": ",".join(f"{n}USD" for n in NAMES[: args.pairs]),
        "BITFINEX_TIMEFRAMES": "1m" if live else args.timeframes,
        "BACKFILL_DAYS": str(args.days if not live else 0.2),
        "RATE_LIMIT_DELAY": str(args.delay),
        "LEASE_TTL_SECONDS": str(args.ttl),
        "WS_INGESTION_ENABLED": str(live).lower(),
        "REST_UPDATE_ENABLED": "false",
    }


# --- (a) backfill -------------------------------------------------------------------------------


@dataclass
class BackfillRun:
    daemons: int
    seconds: float  # until every daemon's /status said its backfill is done
    stored: float  # until the last backfill job ended: every series' history stored
    candles: int
    requests: int  # candle requests the simulator answered, 429s included
    rate_limited: int
    minimum: int
    owners: list[str]  # per daemon: its backfill jobs, and when its first began and last ended


async def stored(url: str, began_ms: int) -> tuple[int, int, float, list[str]]:
    """(candles, the minimum requests: ceil(candles / 10,000) per series, seconds from the
    start until the last backfill job ended, per daemon: its backfill jobs and the seconds from
    the start its first began and its last ended)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, timeframe, count(*) AS n FROM candles GROUP BY 1, 2"
        )
        jobs = await conn.fetch(
            "SELECT owner, count(*) AS n, extract(epoch FROM min(started_at)) * 1000 AS a, "
            "extract(epoch FROM max(completed_at)) * 1000 AS b "
            "FROM ingestion_jobs WHERE job_type = 'backfill' GROUP BY owner ORDER BY owner"
        )
    finally:
        await conn.close()
    owners = [
        f"{j['owner']}: {j['n']} jobs {(float(j['a']) - began_ms) / 1000:.1f}-"
        f"{(float(j['b'] or began_ms) - began_ms) / 1000:.1f} s"
        for j in jobs
    ]
    candles = sum(int(r["n"]) for r in rows)
    last = max(float(j["b"] or began_ms) for j in jobs) if jobs else began_ms
    minimum = sum(math.ceil(int(r["n"]) / PAGE) for r in rows)
    return candles, minimum, (last - began_ms) / 1000, owners


def candle_requests(before: dict[Any, int], after: dict[Any, int]) -> tuple[int, int]:
    hist = [k for k in after if k[0] == "candles_hist"]
    total = sum(after[k] - before.get(k, 0) for k in hist)
    limited = sum(after[k] - before.get(k, 0) for k in hist if k[1] in ("rate_limited", "banned"))
    return total, limited


async def backfill_run(
    args: argparse.Namespace, sim: ChildSimulator, urls: tuple[str, str], n: int, tmp: Path
) -> BackfillRun:
    url = await create_database()
    daemons: list[Daemon] = []
    try:
        before = sim.rest_counts()
        began, began_ms = time.monotonic(), int(time.time() * 1000)
        for i in range(n):
            settings = daemon_settings(args, url, urls, i, live=False)
            daemons.append(await start_daemon(tmp, f"bench-{i + 1}", settings))

        async def all_done() -> bool:
            for d in daemons:
                if d.proc.returncode is not None:
                    raise RuntimeError(f"{d.name} exited: {d.log_path.read_text()[-2000:]}")
                status = await d.status()
                if status is None or status["backfill"]["state"] != "done":
                    return False
            return True

        await poll(f"{n} daemon(s) to finish the backfill", args.timeout, all_done)
        seconds = time.monotonic() - began
        requests, limited = candle_requests(before, sim.rest_counts())
        candles, minimum, last, owners = await stored(url, began_ms)
        return BackfillRun(n, seconds, last, candles, requests, limited, minimum, owners)
    finally:
        for d in daemons:
            await d.stop()
        await drop_database(url)


# --- (b) takeover -------------------------------------------------------------------------------


def subscribed(status: dict[str, Any] | None) -> set[str]:
    if status is None:
        return set()
    shards = status["websocket"]["details"].get("shards", [])
    return {str(c) for s in shards if s["state"] == "subscribed" for c in s.get("channels", [])}


async def takeover_run(
    args: argparse.Namespace, urls: tuple[str, str], tmp: Path
) -> tuple[float, int]:
    """(seconds from the SIGKILL until the survivors carry every channel, the channels)."""
    url = await create_database()
    daemons: list[Daemon] = []
    channels = {f"{n}USD/1m" for n in NAMES[: args.pairs]}
    try:
        for i in range(3):
            settings = daemon_settings(args, url, urls, i, live=True)
            daemons.append(await start_daemon(tmp, f"take-{i + 1}", settings))

        async def covered_by(group: list[Daemon]) -> bool:
            streams = [subscribed(await d.status()) for d in group]
            return all(streams) and set().union(*streams) >= channels

        await poll("3 daemons streaming every channel", 120 + args.ttl, lambda: covered_by(daemons))
        victim, survivors = daemons[0], daemons[1:]
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        killed_at = time.monotonic()
        await poll("the survivors to take over", args.ttl + 120, lambda: covered_by(survivors))
        return time.monotonic() - killed_at, len(channels)
    finally:
        for d in daemons:
            await d.stop()
        await drop_database(url)


# --- the report ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    pairs = pairs_by_name([f"{n}USD" for n in NAMES[: args.pairs]])
    limit = args.rest_limit or math.ceil(60 / args.delay) + 5
    config = SimulatorConfig(
        port=0,
        seed=1,
        pairs=pairs,
        history_days=args.days + 5,
        rest_rate_limit=limit,
        rest_rate_window=60.0,
        rest_ban_seconds=10.0,
    )
    print(
        f"{args.pairs} pairs x {args.timeframes}, {args.days:g} days; "
        f"RATE_LIMIT_DELAY={args.delay}; simulator "
        f"limit {limit} requests/min per address; PostgreSQL at {ADMIN_URL}"
    )
    sim = ChildSimulator(config, args.days)
    with tempfile.TemporaryDirectory() as tmp_name, sim as urls:
        tmp = Path(tmp_name)
        runs = []
        for n in args.daemons:
            runs.append(await backfill_run(args, sim, urls, n, tmp))
            r = runs[-1]
            print(f"  {n} daemon(s): stored in {r.stored:.1f} s; {'; '.join(r.owners)}")
        takeover, channels = await takeover_run(args, urls, tmp) if args.takeover else (0.0, 0)
    return report(args, runs, takeover, channels)


def report(
    args: argparse.Namespace, runs: list[BackfillRun], takeover: float, channels: int
) -> int:
    base = runs[0].stored
    print("\n(a) first backfill, PostgreSQL, one source address per daemon")
    print(
        f"  {'daemons':>7} {'stored s':>8} {'speedup':>8} {'done s':>7} {'candles':>10} "
        f"{'requests':>9} {'minimum':>8} {'ratio':>6} {'429s':>5}"
    )
    for r in runs:
        print(
            f"  {r.daemons:>7} {r.stored:>8.1f} {base / r.stored:>7.2f}x {r.seconds:>7.1f} "
            f"{r.candles:>10,} "
            f"{r.requests:>9} {r.minimum:>8} {r.requests / max(1, r.minimum):>6.2f} "
            f"{r.rate_limited:>5}"
        )
    speedup = base / runs[-1].stored
    # The runs start a minute or two apart: each series' window slides by as many candles.
    same = max(r.candles for r in runs) - min(r.candles for r in runs) <= 3 * args.pairs
    n = runs[-1].daemons
    ok_speed = speedup >= SPEEDUP_TARGET or n != 3  # the target is for 3 daemons
    verdict = _verdict(ok_speed) if n == 3 else "(the target is for 3)"
    print(f"  {n} daemon(s) vs 1 (target for 3: >= {SPEEDUP_TARGET}x): {speedup:.2f}x {verdict}")
    print(f"  the same candles stored in every run (+-3 per series): {_verdict(same)}")
    if not args.takeover:
        return 0 if ok_speed and same else 1
    limit = args.ttl + TAKEOVER_SLACK_S
    ok_take = takeover <= limit
    print(f"\n(b) takeover after a SIGKILL of one of 3 daemons ({channels} channels)")
    print(
        f"  {takeover:.1f} s until the survivors stream every channel; target <= "
        f"LEASE_TTL_SECONDS ({args.ttl:g}) + {TAKEOVER_SLACK_S:g} s: {_verdict(ok_take)}"
    )
    return 0 if ok_speed and ok_take and same else 1


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=24, choices=range(1, len(NAMES) + 1))
    parser.add_argument("--days", type=float, default=7.0, help="BACKFILL_DAYS")
    parser.add_argument(
        "--timeframes",
        default="1m,5m,15m,30m",
        help="BITFINEX_TIMEFRAMES of the backfill runs (the takeover streams 1m)",
    )
    parser.add_argument("--delay", type=float, default=0.75, help="RATE_LIMIT_DELAY, seconds")
    parser.add_argument(
        "--rest-limit",
        type=int,
        default=0,
        help="simulator requests/min per address (0: 60/delay + 5)",
    )
    parser.add_argument("--ttl", type=float, default=30.0, help="LEASE_TTL_SECONDS")
    parser.add_argument(
        "--daemons", type=lambda v: [int(n) for n in v.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--takeover", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=float, default=600.0, help="per backfill run, seconds")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> Any:
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(run())
