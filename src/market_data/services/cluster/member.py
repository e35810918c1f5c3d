"""One daemon's membership of a cluster: daemons sharing one PostgreSQL database.

A member heartbeats its row in `cluster_members` (every TTL/3); the heartbeat also renews every
lease and claim it holds. What it may do follows from the database alone:

- live channels: each member computes the same spread of channels over the live members
  (assignment.py), gives up the leases of channels no longer its own and takes those that are
  free or expired; a lease a live member holds is never taken from it before it expires;
- periodic loops (gap detection, retention, update): one lease per loop, held by whoever took it
  first for as long as it heartbeats, taken over once it stops;
- work items (backfill windows, gap repairs): claimed as rows, each by one member, expiring with
  their owner.

Self-fencing: a member that could not renew for a TTL (its database connection cut) must assume
others have taken its leases, so it reports owning nothing until a heartbeat succeeds again. Two
members therefore never both believe they own a channel for longer than a TTL.

On SQLite the same code runs with one member (one daemon per database file).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from market_data.models import SeriesKey
from market_data.storage.base import ClusterStore, MemberRecord
from market_data.storage.cluster import CHANNEL_LEASE

from .assignment import share_of

log = logging.getLogger(__name__)

LOOP_LEASE = "loop"
BACKFILL_WORK = "backfill"  # one series' backfill stage (daemon_cluster.backfill_item)
GAP_REPAIR_WORK = "gap_repair"  # one series' gap repairs (series_key)
DONE_KEEP_S = 3600.0  # a finished work item is not claimed again for this long
MAX_MEMBERS_SHOWN = 1000


def channel_name(series: SeriesKey) -> str:
    return str(series)  # SYMBOL/tf: symbols never hold a slash


def channel_series(name: str) -> SeriesKey:
    symbol, _, timeframe = name.rpartition("/")
    return SeriesKey(symbol, timeframe)


def series_key(series: SeriesKey) -> str:
    return str(series)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as /status shows it."""

    id: str
    heartbeat: int  # epoch ms, on the database's clock
    started_at: int
    channels: int
    jobs: int
    alive: bool
    host: str | None = None
    pid: int | None = None


@dataclass(slots=True)
class ClusterState:
    """What the API reads: refreshed by every heartbeat cycle."""

    self_id: str
    ttl_s: float
    members: list[MemberInfo] = field(default_factory=list)
    expected_channels: int = 0  # this member's share of the channels
    held_channels: int = 0
    short_since: float | None = None  # monotonic time the share was first found incomplete
    fenced: bool = True  # no heartbeat has succeeded within a TTL
    last_error: str | None = None


class ClusterMember:
    def __init__(
        self,
        store: ClusterStore,
        member_id: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.store = store
        self.id = member_id
        self.ttl_s = ttl_s
        self.ttl_ms = int(ttl_s * 1000)
        self._clock = clock
        self._host = host if host is not None else socket.gethostname()
        self._pid = pid if pid is not None else os.getpid()
        self._renewed_at: float | None = None  # when the latest successful heartbeat began
        self._held: set[tuple[str, str]] = set()
        self._owned: set[str] = set()
        self.state = ClusterState(self_id=member_id, ttl_s=ttl_s)

    # -- membership ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew this member's row, leases and claims (raises StorageUnavailable when the
        database cannot be reached: the member fences itself a TTL after its last success)."""
        began = self._clock()  # the leases run from at least this moment on the database
        beat = await self.store.heartbeat_member(
            self.id, pid=self._pid, host=self._host, ttl_ms=self.ttl_ms
        )
        self._renewed_at = began
        self._held = set(beat.held)
        self._owned &= {n for k, n in self._held if k == CHANNEL_LEASE}
        self.state.fenced = False

    @property
    def fenced(self) -> bool:
        """No heartbeat succeeded within a TTL: others may hold this member's leases now."""
        renewed = self._renewed_at
        fenced = renewed is None or self._clock() - renewed >= self.ttl_s
        self.state.fenced = fenced
        return fenced

    async def members(self) -> list[MemberInfo]:
        """Every member row, alive when its heartbeat is within the TTL."""
        now, rows = await self.store.list_members()
        members = [self._info(row, now) for row in rows[:MAX_MEMBERS_SHOWN]]
        self.state.members = members
        return members

    def _info(self, row: MemberRecord, now: int) -> MemberInfo:
        return MemberInfo(
            id=row.id,
            heartbeat=row.heartbeat_at,
            started_at=row.started_at,
            channels=row.channels,
            jobs=row.jobs,
            alive=now - row.heartbeat_at < self.ttl_ms,
            host=row.host,
            pid=row.pid,
        )

    async def leave(self) -> None:
        """A clean stop: give up every lease and claim at once, so others need not wait a TTL."""
        self._held.clear()
        self._owned.clear()
        self._renewed_at = None
        await self.store.leave_cluster(self.id)

    # -- channels -----------------------------------------------------------------------------

    async def sync_channels(self, channels: Iterable[str]) -> set[str]:
        """Hold this member's share of `channels` among the live members: release leases of
        channels no longer its own, take those free or expired. The channels it owns now
        (none while fenced)."""
        names = set(channels)
        if self.fenced:
            self._owned = set()
            return set()
        alive = [m.id for m in await self.members() if m.alive]
        wanted = share_of(self.id, names, alive)
        held = {n for k, n in self._held if k == CHANNEL_LEASE}
        drop = held - wanted
        if drop:
            await self.store.release_leases(CHANNEL_LEASE, sorted(drop), self.id)
            self._held -= {(CHANNEL_LEASE, n) for n in drop}
        take = wanted - held
        got = (
            await self.store.take_leases(CHANNEL_LEASE, sorted(take), self.id, self.ttl_ms)
            if take
            else set()
        )
        self._held |= {(CHANNEL_LEASE, n) for n in got}
        self._owned = (held & wanted) | got
        self._note_share(len(wanted), len(self._owned))
        return set(self._owned)

    def _note_share(self, expected: int, held: int) -> None:
        state = self.state
        state.expected_channels, state.held_channels = expected, held
        if held >= expected:
            state.short_since = None
        elif state.short_since is None:
            state.short_since = self._clock()

    @property
    def owned_channels(self) -> set[str]:
        """The channels this member should stream now (empty while fenced)."""
        return set() if self.fenced else set(self._owned)

    def owned_series(self) -> set[SeriesKey]:
        """`owned_channels` as series, for the WebSocket ingestion's wanted set."""
        return {channel_series(n) for n in self.owned_channels}

    def holds_share(self) -> bool:
        """Whether this member holds its share of the channels, counting a share still being
        taken over (a previous owner's lease runs out within a TTL) as held."""
        return self.share_check()[0]

    def share_check(self) -> tuple[bool, str]:
        """(holds its share, why), for /health."""
        state = self.state
        alive = sum(1 for m in state.members if m.alive)
        held = f"holds {state.held_channels} of its {state.expected_channels} channels"
        if self._renewed_at is None:
            return True, "joining"
        if self.fenced:
            ago = self._clock() - self._renewed_at
            return False, f"fenced: no heartbeat for {ago:.0f} s, so it holds nothing"
        if state.short_since is not None:
            short = self._clock() - state.short_since
            # Within two TTLs a previous owner's leases run out and the share is taken.
            if short >= self.ttl_s * 2:
                return False, f"{held} (short for {short:.0f} s)"
            return True, f"{held} (taking over)"
        return True, f"{alive} live member(s); {held}"

    # -- loops --------------------------------------------------------------------------------

    async def loop_holder(self, name: str) -> str | None:
        """Take or keep the loop's lease; the member holding it (this one, or another)."""
        if not self.fenced:
            got = await self.store.take_leases(LOOP_LEASE, [name], self.id, self.ttl_ms)
            if name in got:
                self._held.add((LOOP_LEASE, name))
                return self.id
        self._held.discard((LOOP_LEASE, name))
        holder = (await self.store.lease_holders(LOOP_LEASE)).get(name)
        if holder is None or holder[0] == self.id:
            # Our own lease, not renewed for a TTL (fenced): it cannot be trusted any more.
            return None
        return holder[0]

    async def holds_loop(self, name: str) -> bool:
        return await self.loop_holder(name) == self.id

    def led(
        self, name: str, work: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[object]]:
        """A loop cycle that runs `work` only on the loop's lease holder; elsewhere it returns
        `skipped: held by X` (what /status shows as the loop's last result)."""

        async def cycle() -> object:
            holder = await self.loop_holder(name)
            if holder != self.id:
                return f"skipped: held by {holder or 'nobody (fenced)'}"
            return await work()

        return cycle

    # -- work items ---------------------------------------------------------------------------

    async def claim(self, kind: str, candidates: Iterable[str], limit: int = 1) -> list[str]:
        """Claim up to `limit` of `candidates` nobody else holds (none while fenced)."""
        if self.fenced:
            return []
        return await self.store.claim_work(kind, list(candidates), self.id, self.ttl_ms, limit)

    async def finish(self, kind: str, key: str, keep_s: float = DONE_KEEP_S) -> None:
        await self.store.finish_work(kind, key, self.id, int(keep_s * 1000))

    async def release(self, kind: str, key: str) -> None:
        await self.store.release_work(kind, key, self.id)

    @asynccontextmanager
    async def claimed(
        self, kind: str, key: str, keep_s: float = DONE_KEEP_S
    ) -> AsyncIterator[bool]:
        """`async with member.claimed(BACKFILL_WORK, key) as mine:` do the work when `mine`;
        finished on success (not claimed again for `keep_s`; 0: free at once), given back when
        the work raises."""
        async with self.claimed_or_busy(kind, key, keep_s, tell=False) as mine:
            yield bool(mine)

    @asynccontextmanager
    async def claimed_or_busy(
        self, kind: str, key: str, keep_s: float = DONE_KEEP_S, *, tell: bool = True
    ) -> AsyncIterator[bool | None]:
        """As `claimed`, but "not mine" is told apart: False when the item is done (within its
        `keep_s`), None when someone holds it now (or this member is fenced): ask again later,
        it is free again if the holder dies or gives it back."""
        mine = bool(await self.claim(kind, [key]))
        if not mine:
            done = not tell or key in await self.store.work_done(kind, [key])
            yield False if done else None
            return
        try:
            yield True
        except BaseException:
            try:
                await self.release(kind, key)
            except Exception as exc:  # it expires with the claim anyway
                log.warning("Could not give back %s %s: %s", kind, key, exc)
            raise
        if keep_s > 0:
            await self.finish(kind, key, keep_s)
        else:
            await self.release(kind, key)

    # -- jobs ---------------------------------------------------------------------------------

    async def fail_dead_members_jobs(self) -> dict[str, int]:
        """Close as failed the jobs left running by members whose heartbeat expired."""
        closed = await self.store.fail_member_jobs(self.ttl_ms)
        for owner, n in closed.items():
            log.warning("Marked %d job(s) of member %s (no heartbeat) as failed", n, owner)
        return closed

    async def fail_jobs_at_start(self, *, sole: bool = False) -> dict[str, int]:
        """At start: close the jobs of dead members, of this member's own previous instance and
        of processes that never joined (one-shot commands killed mid-run); a live member's jobs
        are left alone. `sole`: the caller holds the database alone (SQLite's file lock), so
        every other member is gone: their jobs are closed and their leases freed now rather
        than a TTL later."""
        closed = await self.store.fail_member_jobs(
            self.ttl_ms, also=self.id, unowned=True, every_member=sole
        )
        if sole:
            _, rows = await self.store.list_members()
            for row in rows:
                if row.id != self.id:
                    await self.store.leave_cluster(row.id)
        return closed
