"""The backfill among several daemons: items are claimed, and none is left to a dead member.

Each daemon runs the same backfill and walks only the items (one series' stage) it claims. An
item another member held when the run came to it is asked for again at the run's end until it
is done: if its holder died (its claim expires with its heartbeat) or gave it back, it is
claimed and walked here, re-planned from the store so only what is still missing is fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from market_data.lifecycle import until_stopped
from market_data.models import JobStatus, SeriesKey
from market_data.services.backfill_plan import WorkItem

# Claims one item for this daemon among several (series, stage, start, end), for the block:
# True, this daemon walks it (finished when the block ends); False, done by another; None,
# another holds it now.
ItemClaim = Callable[[SeriesKey, str, int, int], AbstractAsyncContextManager[bool | None]]
TAKE_OVER_POLL_S = 1.0  # how often the items others hold are asked for again
# A claimed item that ended so is given back, not marked done: a retry claims it again.
UNFINISHED = (JobStatus.FAILED, JobStatus.CANCELLED)


class GiveBack(Exception):
    """Leaves a claimed item's block so the claim is released, not finished."""


async def until_done(
    attempt: Callable[[WorkItem], Awaitable[bool | None]],
    held: list[WorkItem],
    stop: asyncio.Event,
) -> bool:
    """`attempt` (claim, and walk when claimed) each held item again until none is held by
    another member any more; whether all are done (False: stopped first)."""
    while held:
        left = []
        for item in held:
            if stop.is_set():
                return False
            if await attempt(item) is None:
                left.append(item)
        held = left
        if held and not await until_stopped(stop, asyncio.sleep(TAKE_OVER_POLL_S)):
            return False
    return True
