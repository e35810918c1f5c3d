"""The periodic-loop helper: cadence without drift, failures recorded, stop honoured at once."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from market_data.lifecycle import wait_for_stop
from market_data.scheduler import FAILING_THRESHOLD, PeriodicLoop


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_runs_on_cadence_and_records_status() -> None:
    calls: list[float] = []

    async def cycle() -> str:
        calls.append(time.monotonic())
        return f"cycle {len(calls)}"

    loop = PeriodicLoop("demo", cycle, 0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: loop.status.runs >= 3)
    stop.set()
    await asyncio.wait_for(task, 1)
    status = loop.status
    assert status.runs >= 3
    assert status.failures == 0
    assert status.last_result == f"cycle {status.runs}"
    assert status.last_success_ms is not None
    assert status.last_start_ms is not None
    assert status.last_finish_ms is not None
    assert status.last_finish_ms >= status.last_start_ms
    assert status.stopped
    assert not status.running
    assert status.next_run_ms is None


async def test_cadence_does_not_drift_by_cycle_duration() -> None:
    starts: list[float] = []

    async def cycle() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.05)

    loop = PeriodicLoop("drift", cycle, 0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: len(starts) >= 6)
    stop.set()
    await asyncio.wait_for(task, 1)
    span = starts[5] - starts[0]
    # Five intervals: 0.5 s on the grid; 0.75 s if each wait were added after the cycle.
    assert 0.45 <= span < 0.65, span


async def test_overrunning_cycle_skips_missed_ticks() -> None:
    starts: list[float] = []

    async def cycle() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.25)

    loop = PeriodicLoop("slow", cycle, 0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: len(starts) >= 3)
    stop.set()
    await asyncio.wait_for(task, 2)
    # Each cycle overruns 2.5 ticks: the next one starts on the grid at +0.3, not in a burst.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.28 <= g < 0.4 for g in gaps[:2]), gaps


async def test_failures_are_recorded_and_the_loop_carries_on() -> None:
    outcomes = iter([ValueError("boom")] * FAILING_THRESHOLD + [None] * 100)

    async def cycle() -> str:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return "fine"

    loop = PeriodicLoop("flaky", cycle, 0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: loop.status.consecutive_failures >= FAILING_THRESHOLD)
    assert loop.status.failing
    assert loop.status.last_error == "ValueError: boom"
    await _until(lambda: loop.status.last_success_ms is not None)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert loop.status.failures == FAILING_THRESHOLD
    assert loop.status.consecutive_failures == 0
    assert not loop.status.failing
    assert loop.status.last_result == "fine"
    assert loop.status.runs > FAILING_THRESHOLD


async def test_initial_delay_and_stop_during_wait_is_prompt() -> None:
    calls = 0

    async def cycle() -> None:
        nonlocal calls
        calls += 1

    loop = PeriodicLoop("lazy", cycle, 3600, initial_delay=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: loop.status.next_run_ms is not None)
    assert loop.status.next_run_ms > time.time() * 1000 + 3_500_000
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - began < 0.5
    assert calls == 0
    assert loop.status.runs == 0


async def test_trigger_runs_a_cycle_now() -> None:
    calls = 0

    async def cycle() -> None:
        nonlocal calls
        calls += 1

    loop = PeriodicLoop("manual", cycle, 3600, initial_delay=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await _until(lambda: loop.status.next_run_ms is not None)
    loop.trigger()
    await _until(lambda: calls == 1)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert loop.status.runs == 1


async def test_cycle_in_flight_at_stop_gets_grace_then_cancel() -> None:
    finished_in_grace = asyncio.Event()
    cancelled = asyncio.Event()

    async def short() -> str:
        await asyncio.sleep(0.1)
        finished_in_grace.set()
        return "done"

    async def endless() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop = asyncio.Event()
    graceful = PeriodicLoop("graceful", short, 3600, grace=2)
    hanging = PeriodicLoop("hanging", endless, 3600, grace=0.1)
    tasks = [asyncio.create_task(graceful.run(stop)), asyncio.create_task(hanging.run(stop))]
    await _until(lambda: graceful.status.running and hanging.status.running)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 3)
    assert finished_in_grace.is_set()
    assert graceful.status.last_result == "done"
    assert cancelled.is_set()
    assert hanging.status.last_result == "cancelled at shutdown"
    assert hanging.status.failures == 0


async def test_wait_for_stop() -> None:
    stop = asyncio.Event()
    assert await wait_for_stop(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await wait_for_stop(stop, 5) is True


def test_bad_intervals_are_refused() -> None:
    async def cycle() -> None:
        return None

    with pytest.raises(ValueError, match="interval"):
        PeriodicLoop("x", cycle, 0)
    with pytest.raises(ValueError, match="initial delay"):
        PeriodicLoop("x", cycle, 1, initial_delay=-1)
