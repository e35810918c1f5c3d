"""Simulator settings and the shared context its REST and WebSocket sides work from."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from market_data.simulator.faults import Faults, FaultState
from market_data.simulator.market import Market
from market_data.simulator.pairs import DEFAULT_PAIRS, PairSpec
from market_data.simulator.stats import SimStats

logger = logging.getLogger("market_data.simulator")


@dataclass(slots=True)
class SimulatorConfig:
    """Everything the simulator can be told. Defaults are the real exchange's.

    `clock` is the market's time (seconds since the epoch); without one, market time runs at
    `speed` times real time from the moment the simulator starts (60 makes a minute pass every
    second). Heartbeats, bans, windows and fault durations are in real seconds.
    `churn_minutes` lists one new pair and delists one tail pair every that many minutes of
    market time (0: the pair list never changes); `exchange_pairs()` makes a whole exchange.
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    pairs: tuple[PairSpec, ...] = DEFAULT_PAIRS
    history_days: float = 400.0
    churn_minutes: float = 0.0
    clock: Callable[[], float] | None = None
    speed: float = 1.0
    rest_rate_limit: int = 30  # requests per peer IP per window; 0 disables the limit
    rest_rate_window: float = 60.0
    rest_ban_seconds: float = 60.0
    ws_connection_limit: int = 20  # new connections per peer IP per window; 0 disables
    ws_connection_window: float = 60.0
    ws_channel_limit: int = 25
    ws_heartbeat_seconds: float = 15.0
    ws_snapshot_length: int = 240
    ws_resend_probability: float = 0.1
    faults: Faults = field(default_factory=Faults)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be within 0..65535")
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.churn_minutes < 0:
            raise ValueError("churn_minutes must not be negative")
        if self.ws_heartbeat_seconds <= 0 or self.rest_rate_window <= 0:
            raise ValueError("heartbeat and rate windows must be positive")
        if self.ws_channel_limit < 1 or not 0 <= self.ws_snapshot_length <= 10_000:
            raise ValueError("channel limit must be >= 1, snapshot length within 0..10000")
        if not 0.0 <= self.ws_resend_probability <= 1.0:
            raise ValueError("ws_resend_probability is a share within [0, 1]")
        self.faults.validate()


def scaled_clock(speed: float) -> Callable[[], float]:
    """Market time that starts at real time and runs `speed` times faster."""
    origin = time.time()
    if speed == 1.0:
        return time.time
    return lambda: origin + (time.time() - origin) * speed


@dataclass(slots=True)
class SimContext:
    """What the REST and WebSocket sides share: the market, the switches, the counters."""

    config: SimulatorConfig
    market: Market
    faults: Faults
    stats: SimStats
    state: FaultState = field(default_factory=FaultState)
    rng: Random = field(default_factory=Random)

    async def sleep_until_ms(self, market_ms: int) -> None:
        """Sleep until the market clock reaches `market_ms`.

        Sleeps are capped so a clock injected by a test (which may jump) is re-read often.
        """
        while True:
            delta_ms = market_ms - self.market.now_ms()
            if delta_ms <= 0:
                return
            await asyncio.sleep(min(delta_ms / 1000.0 / self.config.speed, 1.0))
