"""What the chaos run compares and reports: the database against the simulator's truth.

Kept apart from the scenario (test_chaos.py) so each reads on its own: `compare_series` and
`database_checks` produce plain figures, `fault_figures` what the simulator injected.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

from market_data.models import Candle, SeriesKey
from market_data.simulator import Faults, Simulator
from market_data.storage.sql import SqlStore
from market_data.storage.tables import candles, data_gaps, ingestion_jobs, rejected_candles
from market_data.timeframes import align, next_open

# Every fault on. Periods are short enough that each fires several times in a ~90 s chaos phase.
CHAOS_FAULTS = {
    "rest_storm_every": 17.0,
    "rest_storm_duration": 1.5,
    "rest_storm_ban": 1.0,
    "rest_error_rate": 0.15,
    "rest_slow_rate": 0.1,
    "rest_slow_seconds": 0.6,
    "ws_drop_after": 120,
    "ws_restart_every": 23.0,
    "ws_maintenance_every": 31.0,
    "ws_maintenance_duration": 3.0,
    "ws_stall_every": 13.0,
    "ws_stall_duration": 3.5,
    "ws_loss_rate": 0.15,
    "ws_corrupt_rate": 0.03,
    "rest_corrupt_rate": 0.01,  # switched off early (REST_CORRUPT_SECONDS): see test_chaos
}
EXPECTED_FAULTS = (
    "rest_storm",
    "rest_5xx",
    "rest_slow",
    "ws_drop",
    "ws_restart",
    "ws_maintenance",
    "ws_stall",
    "ws_update_lost",
    "rest_corrupt_row",
    "ws_corrupt_row",
)


def faults_off(sim: Simulator) -> None:
    """Every switch off and every fault in progress ended (a maintenance ends by itself: 20061)."""
    off = {name: 0 for name in CHAOS_FAULTS if name != "rest_storm_ban"}
    sim.set_faults(**off)
    sim.state.storm_until = 0.0
    sim.state.stall_until = 0.0


def all_faults() -> Faults:
    faults = Faults()
    faults.update(**CHAOS_FAULTS)
    return faults


def fault_figures(sim: Simulator) -> dict[str, Any]:
    stats = sim.stats
    rest: dict[str, int] = {}
    for (endpoint, outcome), n in sorted(stats.rest_counts.items()):
        rest[f"{endpoint}:{outcome}"] = n
    return {
        "faults_fired": dict(sorted(stats.faults_fired.items())),
        "rest_answers": rest,
        "rest_429": sum(
            n for (_, o), n in stats.rest_counts.items() if o in ("storm", "banned", "rate_limited")
        ),
        "rest_5xx": sum(n for (_, o), n in stats.rest_counts.items() if o == "server_error"),
        "ws_connections_opened": stats.ws_opened,
        "ws_connections_closed": stats.ws_closed,
        "ws_updates_sent": stats.ws_updates_sent,
        "ws_errors_sent": {str(k): v for k, v in stats.ws_errors_sent.items()},
    }


@dataclass
class SeriesFigures:
    series: str
    compared: int = 0  # closed candles in the truth, each looked up in the database
    missing: int = 0
    different: int = 0
    extra: int = 0  # stored candles where the exchange had none
    not_final: int = 0  # stored closed candles still marked non-final
    examples: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return self.missing + self.different + self.extra + self.not_final

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


def _same(mine: Candle, truth: Candle, derived: bool) -> bool:
    ohlc_ok = (mine.open, mine.high, mine.low, mine.close) == (
        truth.open,
        truth.high,
        truth.low,
        truth.close,
    )
    # Native candles are the exchange's numbers exactly; a derived volume is a float sum whose
    # order may differ from the simulator's.
    volume_ok = (
        mine.volume == truth.volume
        if not derived
        else math.isclose(mine.volume, truth.volume, rel_tol=1e-9, abs_tol=1e-12)
    )
    return ohlc_ok and volume_ok


async def compare_series(
    store: SqlStore, sim: Simulator, key: SeriesKey, start_ms: int, cutoff_ms: int, derived: bool
) -> SeriesFigures:
    """Closed candles with open time in [start, cutoff) whose period ended by `cutoff`."""
    start = align(start_ms, key.timeframe)
    if start < start_ms:
        start = next_open(start, key.timeframe)
    truth = [
        c
        for c in sim.market.truth(key.symbol, key.timeframe, start, cutoff_ms)
        if next_open(c.ts, key.timeframe) <= cutoff_ms
    ]
    stored = await store.candles_in_range(key, start, cutoff_ms, limit=1_000_000)
    got = {c.ts: c for c in stored if next_open(c.ts, key.timeframe) <= cutoff_ms}
    figures = SeriesFigures(str(key), compared=len(truth))
    expected = {c.ts for c in truth}
    for c in truth:
        mine = got.get(c.ts)
        if mine is None:
            figures.missing += 1
            figures.note(f"missing {c.ts}")
        elif not _same(mine, c, derived):
            figures.different += 1
            figures.note(f"different {c.ts}: stored {mine} truth {c}")
        elif not mine.final:
            figures.not_final += 1
            figures.note(f"not final {c.ts}")
    for ts in sorted(set(got) - expected):
        figures.extra += 1
        figures.note(f"extra {ts}: {got[ts]}")
    return figures


async def database_checks(store: SqlStore) -> dict[str, Any]:
    """Duplicates, gaps not closed, jobs left running: the raw SQL a user would run."""
    c, g, j, q = candles.c, data_gaps.c, ingestion_jobs.c, rejected_candles.c
    dup_stmt = (
        sa.select(c.exchange, c.symbol, c.timeframe, c.ts, sa.func.count())
        .group_by(c.exchange, c.symbol, c.timeframe, c.ts)
        .having(sa.func.count() > 1)
    )
    gap_dup_stmt = (
        sa.select(g.symbol, g.timeframe, g.gap_start, sa.func.count())
        .group_by(g.symbol, g.timeframe, g.gap_start)
        .having(sa.func.count() > 1)
    )
    async with store.engine.connect() as conn:
        duplicates = (await conn.execute(dup_stmt)).all()
        gap_duplicates = (await conn.execute(gap_dup_stmt)).all()
        gap_states = dict(
            (await conn.execute(sa.select(g.status, sa.func.count()).group_by(g.status))).all()
        )
        unclosed = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(data_gaps)
                .where(sa.or_(g.status.notin_(("repaired", "empty")), g.repaired_at.is_(None)))
            )
        ).scalar_one()
        job_states = [
            tuple(r)
            for r in (
                await conn.execute(
                    sa.select(j.job_type, j.status, sa.func.count()).group_by(j.job_type, j.status)
                )
            ).all()
        ]
        running = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(ingestion_jobs).where(j.status == "running")
            )
        ).scalar_one()
        total = (await conn.execute(sa.select(sa.func.count()).select_from(candles))).scalar_one()
        quarantined = dict(
            (await conn.execute(sa.select(q.source, sa.func.count()).group_by(q.source))).all()
        )
    return {
        "candles_stored": int(total),
        "duplicate_candles": len(duplicates),
        "duplicate_gaps": len(gap_duplicates),
        "gaps_by_status": {str(k): int(v) for k, v in gap_states.items()},
        "gaps_not_closed": int(unclosed),
        "jobs_by_type_and_status": {f"{t}:{s}": int(n) for t, s, n in job_states},
        "jobs_running": int(running),
        "quarantined_by_source": {str(k): int(v) for k, v in quarantined.items()},
    }


async def statuses_of(store: SqlStore, job_ids: list[int]) -> dict[int, tuple[str, str | None]]:
    if not job_ids:
        return {}
    j = ingestion_jobs.c
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(j.id, j.status, j.last_error).where(j.id.in_(job_ids)))
        ).all()
    return {int(i): (str(s), e) for i, s, e in rows}


async def running_job_ids(url: str) -> list[int]:
    """Jobs `running` right now, read with a short-lived connection (no pool to go stale)."""
    conn = await asyncpg.connect(url, timeout=3)
    try:
        rows = await conn.fetch("SELECT id FROM ingestion_jobs WHERE status = 'running'")
    except asyncpg.UndefinedTableError:
        return []  # not migrated yet
    finally:
        await conn.close()
    return [int(r["id"]) for r in rows]


async def restart_postgres(timeout: float = 60.0) -> float:
    """Restart the local cluster and wait until it accepts connections; the seconds it took."""
    began = time.monotonic()
    await _pg_ctl("restart", timeout)
    await _wait_accepting(timeout, "after the restart")
    return time.monotonic() - began


async def stop_postgres_for(
    seconds: float, during: Callable[[], None], timeout: float = 60.0
) -> None:
    """Stop the local PostgreSQL server for `seconds` (calling `during()` every half second
    meanwhile), then start it again and wait until it accepts connections. Only in the serial
    chaos phase: every database of the server goes away."""
    await _pg_ctl("stop", timeout)
    try:
        stopped = time.monotonic()
        while time.monotonic() - stopped < seconds:
            during()
            await asyncio.sleep(0.5)
    finally:
        await _pg_ctl("start", timeout)
    await _wait_accepting(timeout, "after the stop")


async def _pg_ctl(action: str, timeout: float) -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    ctl = shutil.which("pg_ctlcluster") or "pg_ctlcluster"
    proc = await asyncio.create_subprocess_exec(
        ctl,
        "--skip-systemctl-redirect",
        version,
        "main",
        action,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, out.decode(errors="replace")


async def _wait_accepting(timeout: float, when: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=2)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError, TimeoutError):
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not come back {when}") from None
            await asyncio.sleep(0.2)


def figures_json(figures: list[SeriesFigures]) -> list[dict[str, Any]]:
    return [asdict(f) for f in figures]
