"""Several members of a cluster in one process, each with a store (connection pool) of its own on
one real database: channel shares, rebalancing, takeover after a TTL, self-fencing, loop
leadership, concurrent claims, and the jobs dead members leave behind.

Members heartbeat and sync in rounds the test drives (the daemon's `cluster_heartbeat` loop does
the same every TTL/3); the TTL is short (2 s) and every wait polls for the full expected state
with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest

from market_data.daemon_startup import prepare_database
from market_data.daemon_state import RuntimeState
from market_data.errors import MarketDataError
from market_data.models import JobStatus, JobType
from market_data.services.cluster import ClusterMember
from market_data.storage.sql import SqlStore, open_store
from tests.integration.cluster_support import TcpCut

TTL = 2.0
CHANNELS = [f"T{i:02d}USD/{tf}" for i in range(24) for tf in ("1m", "1h")]
POSTGRES = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

Factory = Callable[..., Awaitable[ClusterMember]]


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def member(database_url: str) -> AsyncIterator[Factory]:
    """`await member(id)`: a member with a store of its own on the test's database."""
    stores: list[SqlStore] = []

    async def make(member_id: str, url: str | None = None) -> ClusterMember:
        store = open_store(url or database_url, owner=member_id)
        stores.append(store)
        return ClusterMember(store, member_id, TTL)

    yield make
    for store in stores:
        await store.close()


def own_store(m: ClusterMember) -> SqlStore:
    """The member's whole store (it sees only the cluster part of it)."""
    assert isinstance(m.store, SqlStore)
    return m.store


def assert_disjoint(members: Iterable[ClusterMember]) -> None:
    seen: dict[str, str] = {}
    for m in members:
        for channel in m.owned_channels:
            assert channel not in seen, f"{channel} owned by {seen[channel]} and {m.id}"
            seen[channel] = m.id


async def sync_round(members: list[ClusterMember], channels: list[str] = CHANNELS) -> None:
    """One heartbeat and one sync per member, checking after each that no channel has two
    owners."""
    for m in members:
        await m.heartbeat()
    for m in members:
        await m.sync_channels(channels)
        assert_disjoint(members)


def shares(members: Iterable[ClusterMember]) -> list[int]:
    return [len(m.owned_channels) for m in members]


@POSTGRES
async def test_channels_spread_evenly_over_three_members(member: Factory, store: SqlStore) -> None:
    members = [await member(name) for name in ("a", "b", "c")]

    async def even() -> bool:
        await sync_round(members)
        return shares(members) == [16, 16, 16]

    await wait_until(even, "16 channels each")
    owned = set().union(*(m.owned_channels for m in members))
    assert owned == set(CHANNELS)
    holders = await store.lease_holders("channel")
    assert {name: owner for name, (owner, _) in holders.items()} == {
        c: m.id for m in members for c in m.owned_channels
    }
    for m in members:
        await m.heartbeat()  # the counts are taken at heartbeats
    listed = {m.id: (m.channels, m.alive) for m in await members[0].members()}
    assert listed == {"a": (16, True), "b": (16, True), "c": (16, True)}


@POSTGRES
async def test_a_joining_member_gets_its_share_without_double_ownership(member: Factory) -> None:
    a, b = await member("a"), await member("b")

    async def settled(members: list[ClusterMember], share: int) -> bool:
        await sync_round(members)
        return shares(members) == [share] * len(members)

    await wait_until(lambda: settled([a, b], 24), "24 channels each for two members")
    before = {m.id: m.owned_channels for m in (a, b)}
    c = await member("c")
    await wait_until(lambda: settled([a, b, c], 16), "16 channels each after c joined")
    # c took its share from both; a and b kept most of what they had (few moves besides c's).
    kept = sum(len(m.owned_channels & before[m.id]) for m in (a, b))
    assert kept >= 32 - 4


@POSTGRES
async def test_a_silent_member_s_channels_are_taken_after_the_ttl(member: Factory) -> None:
    members = [await member(name) for name in ("a", "b", "c")]

    async def even() -> bool:
        await sync_round(members)
        return shares(members) == [16, 16, 16]

    await wait_until(even, "16 channels each")
    a, b, c = members
    silent_since = time.monotonic()
    await c.heartbeat()  # its last: it stops here (as if SIGKILLed)

    async def taken_over() -> bool:
        await sync_round([a, b])
        assert_disjoint(members)  # c still believes in its leases until it fences itself
        return len(a.owned_channels) + len(b.owned_channels) == 48

    await wait_until(taken_over, "a and b holding every channel", timeout=TTL + 30)
    took = time.monotonic() - silent_since
    assert took >= TTL  # never before c's leases expired
    assert shares([a, b]) == [24, 24]
    assert c.fenced
    assert c.owned_channels == set()


@POSTGRES
async def test_a_member_cut_from_the_database_fences_itself(
    member: Factory, database_url: str
) -> None:
    async with TcpCut.to_url(database_url) as cut:
        a = await member("a", cut.url)
        b = await member("b")

        async def even() -> bool:
            await sync_round([a, b])
            return shares([a, b]) == [24, 24]

        await wait_until(even, "24 channels each")
        cut.cut()
        cut_at = time.monotonic()
        with pytest.raises(MarketDataError):
            await a.heartbeat()

        async def fenced_and_taken() -> bool:
            with contextlib.suppress(MarketDataError):
                await a.heartbeat()  # keeps failing while cut
            assert_disjoint([a, b])
            await b.heartbeat()
            await b.sync_channels(CHANNELS)
            assert_disjoint([a, b])
            return a.fenced and len(b.owned_channels) == 48

        await wait_until(fenced_and_taken, "b holding every channel", timeout=TTL + 30)
        assert time.monotonic() - cut_at >= TTL * 0.5  # not at once: a's leases ran out first
        assert a.owned_channels == set()
        assert await a.sync_channels(CHANNELS) == set()
        assert await a.claim("backfill", ["w1"]) == []
        assert not a.holds_share()

        cut.restore()

        async def shared_again() -> bool:
            with contextlib.suppress(MarketDataError):
                await sync_round([a, b])
            return shares([a, b]) == [24, 24]

        await wait_until(shared_again, "a back with its share")


@POSTGRES
async def test_one_holder_per_loop_taken_over_when_it_stops(member: Factory) -> None:
    members = [await member(name) for name in ("a", "b", "c")]
    for m in members:
        await m.heartbeat()
    holders = await asyncio.gather(*(m.loop_holder("gap_detection") for m in members))
    assert len(set(holders)) == 1
    assert holders[0] in {"a", "b", "c"}
    leader = next(m for m in members if m.id == holders[0])
    others = [m for m in members if m is not leader]
    runs: list[str] = []

    async def work() -> str:
        runs.append("ran")
        return "done"

    results = [await m.led("gap_detection", work)() for m in members]
    assert runs == ["ran"]
    assert sorted(results) == sorted(["done"] + [f"skipped: held by {leader.id}"] * 2)

    stopped_at = time.monotonic()  # the leader stops heartbeating here

    async def taken_over() -> bool:
        for m in others:
            await m.heartbeat()
        new = {await m.loop_holder("gap_detection") for m in others}
        return len(new) == 1 and new <= {m.id for m in others}

    await wait_until(taken_over, "another member leading gap_detection", timeout=TTL + 30)
    assert time.monotonic() - stopped_at >= TTL * 0.9


async def test_concurrent_claims_never_give_one_item_to_two_members(
    member: Factory, backend: str
) -> None:
    members = [await member(f"m{i}") for i in range(4)]
    keys = [f"BTCUSD/1m/{i * 1000}-{(i + 1) * 1000}" for i in range(60)]
    for m in members:
        await m.heartbeat()
    claimed: dict[str, list[str]] = {m.id: [] for m in members}

    async def work(m: ClusterMember) -> None:
        while got := await m.claim("backfill", keys, limit=3):
            claimed[m.id].extend(got)
            for key in got:
                await m.finish("backfill", key)

    await asyncio.gather(*(work(m) for m in members))
    everything = [k for got in claimed.values() for k in got]
    assert sorted(everything) == sorted(keys)  # each exactly once
    if backend == "postgres":  # concurrent connections: the work was really split
        assert sum(1 for got in claimed.values() if got) >= 2


@POSTGRES
async def test_a_dead_member_s_claims_and_jobs_pass_to_the_survivors(
    member: Factory, store: SqlStore
) -> None:
    a, b = await member("a"), await member("b")
    await a.heartbeat()
    await b.heartbeat()
    assert await a.claim("gap_repair", ["BTCUSD/1m", "ETHUSD/1m"], limit=2) == [
        "BTCUSD/1m",
        "ETHUSD/1m",
    ]
    job_a = await own_store(a).create_job(JobType.BACKFILL, "BTCUSD", "1m")
    job_b = await own_store(b).create_job(JobType.UPDATE)
    assert await b.claim("gap_repair", ["BTCUSD/1m"]) == []
    assert await b.fail_dead_members_jobs() == {}  # a is alive

    async def survivors_took_over() -> bool:
        await b.heartbeat()
        closed = await b.fail_dead_members_jobs()
        if not closed:
            return False
        assert closed == {"a": 1}
        return True

    await wait_until(survivors_took_over, "a's job failed", timeout=TTL + 30)
    jobs = {j.id: j for j in await store.list_jobs()}
    assert jobs[job_a].status == JobStatus.FAILED
    assert jobs[job_a].last_error == "failed: member a stopped heartbeating"
    assert jobs[job_b].status == JobStatus.RUNNING  # b is alive: its job is its own
    assert (jobs[job_a].owner, jobs[job_b].owner) == ("a", "b")
    assert sorted(await b.claim("gap_repair", ["BTCUSD/1m", "ETHUSD/1m"], limit=5)) == [
        "BTCUSD/1m",
        "ETHUSD/1m",
    ]


@POSTGRES
async def test_prepare_database_leaves_a_live_member_s_jobs_alone(
    member: Factory, store: SqlStore, database_url: str
) -> None:
    a = await member("a")
    await a.heartbeat()
    live = await own_store(a).create_job(JobType.BACKFILL, "BTCUSD", "1m")
    old_self = await member("b")  # b's previous instance: killed, never heartbeated
    orphan = await own_store(old_self).create_job(JobType.UPDATE)
    unowned = await store.create_job(JobType.CLEANUP)  # a one-shot command, killed

    b = await member("b")
    await prepare_database(own_store(b), RuntimeState(started_at_ms=0), b)
    jobs = {j.id: j for j in await store.list_jobs()}
    assert jobs[live].status == JobStatus.RUNNING
    assert jobs[orphan].status == JobStatus.FAILED
    assert jobs[orphan].last_error == "interrupted: b stopped and started again"
    assert jobs[unowned].status == JobStatus.FAILED


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_single_member_on_sqlite_holds_everything(member: Factory) -> None:
    only = await member("solo")
    await only.heartbeat()
    assert await only.sync_channels(CHANNELS) == set(CHANNELS)
    assert await only.holds_loop("cleanup")
    assert only.holds_share()
    assert [(m.id, m.channels, m.alive) for m in await only.members()] == [("solo", 0, True)]
    await only.heartbeat()  # the count is taken at heartbeats
    assert [(m.id, m.channels) for m in await only.members()] == [("solo", 48)]
    await only.leave()
    assert await only.members() == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_daemon_holding_the_database_alone_clears_its_predecessor_at_once(
    member: Factory, store: SqlStore
) -> None:
    # The predecessor (another PID, so another default DAEMON_ID) was killed a moment ago: its
    # heartbeat is fresh, but the file lock the new daemon holds proves it gone.
    old = await member("host-101")
    await old.heartbeat()
    assert await old.sync_channels(CHANNELS) == set(CHANNELS)
    killed = await own_store(old).create_job(JobType.BACKFILL, "BTCUSD", "1m")

    new = await member("host-202")
    await prepare_database(own_store(new), RuntimeState(started_at_ms=0), new, sole=True)
    jobs = {j.id: j for j in await store.list_jobs()}
    assert jobs[killed].status == JobStatus.FAILED
    assert jobs[killed].last_error == "interrupted: member host-101 stopped"
    await new.heartbeat()
    assert await new.sync_channels(CHANNELS) == set(CHANNELS)  # no TTL to wait out
    assert [m.id for m in await new.members()] == ["host-202"]


@POSTGRES
async def test_members_syncing_at_the_same_moment_keep_one_owner_per_channel(
    member: Factory,
) -> None:
    # Heartbeats renew, syncs release and take, all at once on separate connections, while a
    # member joins: never two owners, no error (a lock cycle would be a deadlock error), and
    # the spread settles.
    members = [await member(f"m{i}") for i in range(3)]

    async def beat_and_sync(m: ClusterMember) -> None:
        await m.heartbeat()
        await m.sync_channels(CHANNELS)

    for round_ in range(12):
        if round_ == 4:
            members.append(await member("m3"))
        await asyncio.gather(*(beat_and_sync(m) for m in members))
        assert_disjoint(members)

    async def even() -> bool:
        await asyncio.gather(*(beat_and_sync(m) for m in members))
        assert_disjoint(members)
        return shares(members) == [12, 12, 12, 12]

    await wait_until(even, "12 channels each")


async def test_a_claimed_item_is_finished_on_success_and_given_back_on_failure(
    member: Factory,
) -> None:
    a, b = await member("a"), await member("b")
    await a.heartbeat()
    await b.heartbeat()
    async with a.claimed("backfill", "BTCUSD/1m/0-1000") as mine:
        assert mine
        async with b.claimed("backfill", "BTCUSD/1m/0-1000") as theirs:
            assert not theirs  # held by a meanwhile
    assert await b.claim("backfill", ["BTCUSD/1m/0-1000"]) == []  # done: not claimed again

    async def failing_work() -> None:
        async with a.claimed("backfill", "BTCUSD/1m/1000-2000") as mine:
            assert mine
            raise RuntimeError("exchange down")

    with pytest.raises(RuntimeError):
        await failing_work()
    assert await b.claim("backfill", ["BTCUSD/1m/1000-2000"]) == ["BTCUSD/1m/1000-2000"]
