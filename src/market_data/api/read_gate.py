"""A bound on concurrent API reads: heavy reads queue in front of the database, not in it.

At most `concurrency` reads run at once, on a pool of exactly that many connections of their
own (`Store.reader`), so none waits for a connection and none holds one the daemon writes with.
At most `waiting` more wait for a turn, each for at most `max_wait_s`. Past that the answer is
503 with `Retry-After`, which a client can act on, instead of a request queued in a pool until a
timeout turns it into "database unavailable" (and /health's ping queued behind it, so a watchdog
restarted a healthy daemon). /health pings on a connection of its own, outside this gate.

The bound is the dependency `ReadPermit`, applied to the read routes where the app includes
them; the permit is held until the response is sent, streamed bodies included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

# Two cores serve 10,000-row pages fastest a few at a time (bench/api.py --concurrent).
READ_CONCURRENCY = 8
READ_WAITING = 256
READ_MAX_WAIT_S = 10.0
RETRY_AFTER_S = 1


class ReadsBusy(Exception):
    """Every read slot is taken and the waiting line is full (or waited too long)."""


@dataclass(slots=True)
class GateStats:
    admitted: int = 0
    refused: int = 0
    running: int = 0
    waiting: int = 0


class ReadGate:
    def __init__(
        self,
        concurrency: int = READ_CONCURRENCY,
        waiting: int = READ_WAITING,
        max_wait_s: float = READ_MAX_WAIT_S,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.max_waiting = max(0, waiting)
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(self.concurrency)
        self.stats = GateStats()

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one read slot for the duration; ReadsBusy when none comes in time."""
        stats = self.stats
        if self._slots.locked():
            if stats.waiting >= self.max_waiting:
                stats.refused += 1
                raise ReadsBusy
            stats.waiting += 1
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                stats.refused += 1
                raise ReadsBusy from None
            finally:
                stats.waiting -= 1
        else:
            await self._slots.acquire()  # free: returns at once
        stats.admitted += 1
        stats.running += 1
        try:
            yield
        finally:
            stats.running -= 1
            self._slots.release()


async def read_permit(request: Request) -> AsyncIterator[None]:
    gate: ReadGate = request.app.state.read_gate
    try:
        async with gate.permit():
            yield
    except ReadsBusy:
        raise HTTPException(
            503,
            "too many reads in progress; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None


ReadPermit = Annotated[None, Depends(read_permit)]
