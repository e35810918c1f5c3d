"""Simulator fixtures: a real Bitfinex stand-in on a free loopback port for each test.

- `simulator`: defaults tuned for tests (heartbeat 0.5 s, rate and connection limits high).
- `simulator_factory`: `await simulator_factory(speed=60, faults=Faults(...))` builds one with
  `fast_config(**overrides)`, or pass a whole `SimulatorConfig`; all are stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from market_data.simulator import Simulator, SimulatorConfig, run_simulator

SimulatorFactory = Callable[..., Awaitable[Simulator]]


def fast_config(**overrides: Any) -> SimulatorConfig:
    """A config for tests: port 0, fast heartbeats, limits out of the way unless overridden."""
    values: dict[str, Any] = {
        "port": 0,
        "seed": 1234,
        "rest_rate_limit": 100_000,
        "ws_connection_limit": 10_000,
        "ws_heartbeat_seconds": 0.5,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with run_simulator(fast_config()) as sim:
        yield sim


@pytest.fixture
async def simulator_factory() -> AsyncIterator[SimulatorFactory]:
    async with AsyncExitStack() as stack:

        async def make(config: SimulatorConfig | None = None, /, **overrides: Any) -> Simulator:
            chosen = config if config is not None else fast_config(**overrides)
            return await stack.enter_async_context(run_simulator(chosen))

        yield make
