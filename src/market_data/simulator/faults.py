"""Fault switches and the state of the faults in progress.

`Faults` holds what a test or the CLI asks for; the server reads it on every request and on
every tick, so a switch set at runtime (`sim.faults.ws_loss_rate = 0.2`) takes effect at once.
Periodic faults (`*_every`) fire every that many seconds counted from when the switch was set.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, cast


@dataclass(slots=True)
class Faults:
    """Every fault the simulator can inject. Zero means off. Times in seconds."""

    # REST: storms of 429s, each calling client banned for `rest_storm_ban`.
    rest_storm_every: float = 0.0
    rest_storm_duration: float = 0.0
    rest_storm_ban: float = 5.0
    # REST: share of answers that are 5xx (502/503/504/520, HTML like a proxy's).
    rest_error_rate: float = 0.0
    # REST: share of answers delayed by `rest_slow_seconds`.
    rest_slow_rate: float = 0.0
    rest_slow_seconds: float = 0.0
    # WebSocket: abort each connection (TCP close, no close frame) after N messages sent to it.
    ws_drop_after: int = 0
    # WebSocket: info 20051 to every connection, then close, every S seconds.
    ws_restart_every: float = 0.0
    # WebSocket: maintenance (20060, platform status 0, no updates, then 20061) every S seconds.
    ws_maintenance_every: float = 0.0
    ws_maintenance_duration: float = 0.0
    # WebSocket: silent stalls (no data, no heartbeats) every S seconds for a duration.
    ws_stall_every: float = 0.0
    ws_stall_duration: float = 0.0
    # WebSocket: share of candle updates never sent.
    ws_loss_rate: float = 0.0
    # Share of candle rows sent broken (high below low, negative volume, NaN, infinite,
    # misaligned or future time): REST `hist` answers and WebSocket snapshots and updates.
    rest_corrupt_rate: float = 0.0
    ws_corrupt_rate: float = 0.0
    # WebSocket: push a changed candle on every channel as fast as the sockets take them.
    firehose: bool = False

    def update(self, **changes: float | int | bool) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault switches: {', '.join(sorted(unknown))}")
        # Refuse bad values before touching anything.
        replace(self, **cast(dict[str, Any], changes)).validate()
        for name, value in changes.items():
            setattr(self, name, value)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, bool) and value < 0:
                raise ValueError(f"fault {f.name} must not be negative")
        for name in (
            "rest_error_rate",
            "rest_slow_rate",
            "ws_loss_rate",
            "rest_corrupt_rate",
            "ws_corrupt_rate",
        ):
            if getattr(self, name) > 1:
                raise ValueError(f"fault {name} is a share within [0, 1]")


@dataclass(slots=True)
class FaultState:
    """Faults in progress, as monotonic deadlines (0 = not active)."""

    storm_until: float = 0.0
    maintenance_until: float = 0.0
    stall_until: float = 0.0

    def storm(self, now: float) -> bool:
        return now < self.storm_until

    def maintenance(self, now: float) -> bool:
        return now < self.maintenance_until

    def stall(self, now: float) -> bool:
        return now < self.stall_until
