"""Holding off Python's cyclic garbage collector around bulk, cycle-free allocation.

A 10,000-row backfill page allocates tens of thousands of containers (decoded row arrays,
candles, table rows). Counted as they come, they set off dozens of young collections per page
and, in a process as small as the daemon, a full collection (scanning every object) every page
or two: together about as much CPU as the parsing itself. Nothing built in these sections can
form a cycle, so pausing the collector loses nothing; it resumes when the section ends.

Use it only around synchronous code (never across an `await`), so the pause is bounded by the
section's own run time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """`with collector_paused():` the cyclic collector is off inside, as it was after."""
    if not gc.isenabled():  # someone else paused it (or a nested section): leave it to them
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
