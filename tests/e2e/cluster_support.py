"""What the cluster chaos run watches: which live channels each daemon streams, sampled from
its /status all along, and the longest time any channel was streamed by two live members.

Kept apart from the scenario (test_cluster_chaos.py). A daemon whose process has ended streams
nothing; one that is up but does not answer keeps the channels it last reported (the strict
reading: it may still stream them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.daemon_process import DaemonProcess

MAX_SAMPLES = 20_000  # rounds kept: ~2.5 hours at the test's pace, far more than a run


def streamed_channels(status: dict[str, Any]) -> set[str]:
    """The channels a daemon's /status says its WebSocket shards carry."""
    shards = status["websocket"]["details"].get("shards", [])
    return {str(c) for shard in shards for c in shard.get("channels", [])}


@dataclass(slots=True)
class Round:
    at: float  # monotonic, when the round's answers were all in
    streams: dict[str, set[str]]  # daemon name -> the channels it streams


@dataclass
class ChannelWatch:
    """Samples every daemon's /status every `every` seconds until stopped."""

    daemons: dict[str, DaemonProcess]  # the current process of each name (replaced on restart)
    every: float = 0.5
    rounds: list[Round] = field(default_factory=list)
    last: dict[str, set[str]] = field(default_factory=dict)
    errors: int = 0

    def replace(self, name: str, daemon: DaemonProcess) -> None:
        """A daemon restarted under the same name: what the old process streamed is gone."""
        self.daemons[name] = daemon
        self.last[name] = set()

    async def _one(self, name: str, d: DaemonProcess) -> tuple[str, set[str]]:
        if not d.alive:
            return name, set()
        try:
            status = await d.json("/status")
        except (httpx.HTTPError, ValueError, KeyError):
            self.errors += 1
            return name, set(self.last.get(name, set()))
        return name, streamed_channels(status)

    async def sample(self) -> Round:
        answers = await asyncio.gather(*(self._one(n, d) for n, d in self.daemons.items()))
        streams = dict(answers)
        # A process that ended while it was asked streams nothing now.
        for name, d in self.daemons.items():
            if not d.alive:
                streams[name] = set()
        self.last.update(streams)
        got = Round(time.monotonic(), streams)
        if len(self.rounds) < MAX_SAMPLES:
            self.rounds.append(got)
        return got

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def covered(self, channels: Iterable[str]) -> bool:
        """The latest round has every channel streamed by someone."""
        if not self.rounds:
            return False
        streamed = set().union(*self.rounds[-1].streams.values())
        return set(channels) <= streamed


def longest_double_streaming(rounds: list[Round]) -> tuple[float, str | None]:
    """(seconds, channel): the longest time one channel was streamed by two or more daemons,
    an upper bound: from the last round before it was seen doubled to the first round after
    (it may have begun just after the one and ended just before the other)."""
    longest, which = 0.0, None
    began: dict[str, float] = {}  # channel -> the round before it was first seen doubled
    previous: float | None = None
    for r in rounds:
        counts: dict[str, int] = {}
        for channels in r.streams.values():
            for c in channels:
                counts[c] = counts.get(c, 0) + 1
        doubled = {c for c, n in counts.items() if n > 1}
        for c in list(began):
            span = r.at - began[c]
            if span > longest:
                longest, which = span, c
            if c not in doubled:
                del began[c]
        for c in doubled - set(began):
            began[c] = previous if previous is not None else r.at
            if r.at - began[c] > longest:
                longest, which = r.at - began[c], c
        previous = r.at
    return longest, which
