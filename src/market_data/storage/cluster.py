"""Members, leases and claimed work of several daemons on one database (`ClusterStore`).

Written once for both engines. Every expiry is computed and judged by the database's clock
(`Dialect.clock`), so members on machines whose clocks disagree still agree on who holds what.
Claims lock the candidate rows with `Dialect.skip_locked` (PostgreSQL's `FOR UPDATE SKIP
LOCKED`): concurrent claimers pass over each other's rows instead of waiting or both taking them.
On SQLite every write transaction is already exclusive (one daemon per file anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from market_data.models import JobStatus
from market_data.storage.base import Heartbeat, MemberRecord
from market_data.storage.core import SqlBase
from market_data.storage.dialect_time import EpochMs
from market_data.storage.tables import (
    ERROR_TEXT_LIMIT,
    cluster_members,
    ingestion_jobs,
    leases,
    work_claims,
)

CHANNEL_LEASE = "channel"  # the lease kind a member's `channels` count counts
MAX_NAMES = 10_000  # names or keys per call
_CHUNK = 500  # rows per multi-row INSERT (SQLite caps bound parameters per statement)
# Rows whose expiry (or member heartbeat) is this old are deleted at heartbeats: the tables stay
# small, and a member that has been gone for a day has long had its jobs failed.
FORGET_AFTER_MS = 24 * 3600 * 1000
_RUNNING = JobStatus.RUNNING.value


def _names(names: Sequence[str]) -> list[str]:
    # Sorted: concurrent transactions lock rows in one order, so they never deadlock.
    unique = sorted(set(names))
    if len(unique) > MAX_NAMES:
        raise ValueError(f"{len(unique)} names; at most {MAX_NAMES} per call")
    return unique


class ClusterMixin(SqlBase):
    def _now(self, plus_ms: int = 0) -> sa.ColumnElement[Any]:
        return self.dialect.clock(plus_ms)

    async def _lock_leases(self, conn: AsyncConnection, where: sa.ColumnElement[bool]) -> None:
        """Lock these lease rows in key order before changing them. Taking leases locks rows
        in that order too (names sorted; a conflicting row is locked even when it is not
        taken), so two transactions never wait on each other in a circle."""
        order = (leases.c.kind, leases.c.name)
        await conn.execute(self.dialect.lock_rows(sa.select(*order).where(where).order_by(*order)))

    def _dead(self, ttl_ms: int) -> sa.Select[Any]:
        """Members whose heartbeat is older than `ttl_ms`. What they hold is free at once, even
        where a lease or claim they took after that heartbeat has a little longer to run: a
        member stops trusting its leases a TTL after its last successful heartbeat began."""
        m = cluster_members
        return sa.select(m.c.id).where(m.c.heartbeat_at < self._now(-ttl_ms))

    async def heartbeat_member(
        self, member_id: str, *, pid: int, host: str, ttl_ms: int
    ) -> Heartbeat:
        m = cluster_members
        row = self.dialect.insert(m).values(
            id=member_id, started_at=self._now(), heartbeat_at=self._now(), pid=pid, host=host
        )
        row = row.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "heartbeat_at": row.excluded.heartbeat_at,
                # A new process under the same DAEMON_ID starts anew.
                "started_at": sa.case(
                    (m.c.pid == row.excluded.pid, m.c.started_at), else_=row.excluded.started_at
                ),
                "pid": row.excluded.pid,
                "host": row.excluded.host,
            },
        )
        renew = (
            leases.update()
            .where(leases.c.owner == member_id)
            .values(expires_at=self._now(ttl_ms))
            .returning(leases.c.kind, leases.c.name)
        )
        claims = (
            work_claims.update()
            .where(work_claims.c.owner == member_id, work_claims.c.state == "claimed")
            .values(expires_at=self._now(ttl_ms))
        )
        channels = (
            sa.select(sa.func.count())
            .select_from(leases)
            .where(leases.c.owner == member_id, leases.c.kind == CHANNEL_LEASE)
            .scalar_subquery()
        )
        jobs = (
            sa.select(sa.func.count())
            .select_from(ingestion_jobs)
            .where(ingestion_jobs.c.owner == member_id, ingestion_jobs.c.status == _RUNNING)
            .scalar_subquery()
        )
        counts = m.update().where(m.c.id == member_id).values(channels=channels, jobs=jobs)
        old = self._now(-FORGET_AFTER_MS)
        async with self._write() as conn:
            await conn.execute(row)
            await self._lock_leases(conn, leases.c.owner == member_id)
            held = frozenset((k, n) for k, n in await conn.execute(renew))
            await conn.execute(claims)
            await conn.execute(counts)
            await conn.execute(leases.delete().where(leases.c.expires_at < old))
            await conn.execute(work_claims.delete().where(work_claims.c.expires_at < old))
            await conn.execute(m.delete().where(m.c.heartbeat_at < old))
            now = (await conn.execute(sa.select(sa.type_coerce(self._now(), EpochMs)))).scalar()
        return Heartbeat(now=int(now or 0), held=held)

    async def leave_cluster(self, member_id: str) -> None:
        async with self._write() as conn:
            await self._lock_leases(conn, leases.c.owner == member_id)
            await conn.execute(leases.delete().where(leases.c.owner == member_id))
            await conn.execute(
                work_claims.update()
                .where(work_claims.c.owner == member_id, work_claims.c.state == "claimed")
                .values(state="open", owner=None, expires_at=None)
            )
            await conn.execute(cluster_members.delete().where(cluster_members.c.id == member_id))

    async def list_members(self) -> tuple[int, list[MemberRecord]]:
        m = cluster_members
        stmt = sa.select(
            m.c.id, m.c.started_at, m.c.heartbeat_at, m.c.pid, m.c.host, m.c.channels, m.c.jobs
        ).order_by(m.c.id)
        async with self._read() as conn:
            now = (await conn.execute(sa.select(sa.type_coerce(self._now(), EpochMs)))).scalar()
            rows = [MemberRecord(*row) for row in await conn.execute(stmt)]
        return int(now or 0), rows

    async def take_leases(
        self, kind: str, names: Sequence[str], owner: str, ttl_ms: int
    ) -> set[str]:
        taken: set[str] = set()
        wanted = _names(names)
        async with self._write() as conn:
            for i in range(0, len(wanted), _CHUNK):
                values = [
                    {"kind": kind, "name": n, "owner": owner, "expires_at": self._now(ttl_ms)}
                    for n in wanted[i : i + _CHUNK]
                ]
                stmt = self.dialect.insert(leases).values(values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["kind", "name"],
                    set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
                    # Another owner's lease is taken only once it has expired.
                    where=sa.or_(
                        leases.c.owner == stmt.excluded.owner,
                        leases.c.expires_at < self._now(),
                        leases.c.owner.in_(self._dead(ttl_ms)),
                    ),
                ).returning(leases.c.name)
                taken.update(n for (n,) in await conn.execute(stmt))
        return taken

    async def release_leases(self, kind: str, names: Sequence[str], owner: str) -> None:
        gone = _names(names)
        if not gone:
            return
        where = sa.and_(leases.c.kind == kind, leases.c.owner == owner, leases.c.name.in_(gone))
        async with self._write() as conn:
            await self._lock_leases(conn, where)
            await conn.execute(leases.delete().where(where))

    async def lease_holders(self, kind: str) -> dict[str, tuple[str, int]]:
        stmt = (
            sa.select(leases.c.name, leases.c.owner, leases.c.expires_at)
            .where(leases.c.kind == kind, leases.c.expires_at >= self._now())
            .limit(MAX_NAMES)
        )
        async with self._read() as conn:
            return {name: (owner, int(exp)) for name, owner, exp in await conn.execute(stmt)}

    async def claim_work(
        self, kind: str, keys: Sequence[str], owner: str, ttl_ms: int, limit: int
    ) -> list[str]:
        wanted = _names(keys)
        limit = max(0, min(int(limit), MAX_NAMES))
        if not wanted or not limit:
            return []
        w = work_claims
        # Known first, in a transaction of its own: the claim below then only locks rows.
        async with self._write() as conn:
            for i in range(0, len(wanted), _CHUNK):
                rows = [{"kind": kind, "key": k} for k in wanted[i : i + _CHUNK]]
                stmt = self.dialect.insert(w).values(rows).on_conflict_do_nothing()
                await conn.execute(stmt)
        free = sa.or_(
            w.c.state == "open",
            w.c.expires_at < self._now(),  # its owner stopped renewing it, or done long ago
            sa.and_(w.c.owner == owner, w.c.state == "claimed"),
            sa.and_(w.c.state == "claimed", w.c.owner.in_(self._dead(ttl_ms))),
        )
        pick = self.dialect.skip_locked(
            sa.select(w.c.key)
            .where(w.c.kind == kind, w.c.key.in_(wanted), free)
            .order_by(w.c.key)
            .limit(limit)
        )
        async with self._write() as conn:
            claimed = [k for (k,) in await conn.execute(pick)]
            if claimed:
                await conn.execute(
                    w.update()
                    .where(w.c.kind == kind, w.c.key.in_(claimed))
                    .values(state="claimed", owner=owner, expires_at=self._now(ttl_ms))
                )
        return claimed

    async def finish_work(self, kind: str, key: str, owner: str, keep_ms: int) -> None:
        w = work_claims
        stmt = (
            w.update()
            .where(w.c.kind == kind, w.c.key == key, w.c.owner == owner)
            .values(state="done", expires_at=self._now(keep_ms))
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def work_done(self, kind: str, keys: Sequence[str]) -> set[str]:
        w = work_claims
        stmt = sa.select(w.c.key).where(
            w.c.kind == kind,
            w.c.key.in_(_names(keys)),
            w.c.state == "done",
            w.c.expires_at >= self._now(),
        )
        async with self._read() as conn:
            return {str(k) for (k,) in await conn.execute(stmt)}

    async def release_work(self, kind: str, key: str, owner: str) -> None:
        w = work_claims
        stmt = (
            w.update()
            .where(w.c.kind == kind, w.c.key == key, w.c.owner == owner, w.c.state == "claimed")
            .values(state="open", owner=None, expires_at=None)
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def fail_member_jobs(
        self,
        ttl_ms: int,
        *,
        also: str | None = None,
        unowned: bool = False,
        every_member: bool = False,
    ) -> dict[str, int]:
        j, m = ingestion_jobs, cluster_members
        # (which jobs, the reason) in turn; every condition is re-checked inside the UPDATE.
        cases: list[tuple[sa.ColumnElement[bool], str]] = []
        if every_member:
            cases.append((j.c.owner.in_(sa.select(m.c.id)), "interrupted: member {} stopped"))
        else:
            dead = self._dead(ttl_ms)
            cases.append((j.c.owner.in_(dead), "failed: member {} stopped heartbeating"))
        if also is not None:
            cases.append((j.c.owner == also, "interrupted: {} stopped and started again"))
        if unowned:
            cases.append(
                (
                    sa.or_(j.c.owner.is_(None), j.c.owner.not_in(sa.select(m.c.id))),
                    "interrupted: the process {} stopped",
                )
            )
        closed: dict[str, int] = {}
        async with self._write() as conn:
            for where, reason in cases:
                owners = await conn.execute(
                    sa.select(j.c.owner, sa.func.count())
                    .where(j.c.status == _RUNNING, where)
                    .group_by(j.c.owner)
                )
                for owner, _count in list(owners):
                    who = owner if owner is not None else "that ran it"
                    text = reason.format(who)[:ERROR_TEXT_LIMIT]
                    stmt = (
                        j.update()
                        .where(
                            j.c.status == _RUNNING,
                            where,
                            j.c.owner.is_(None) if owner is None else j.c.owner == owner,
                        )
                        .values(status="failed", completed_at=self._clock(), last_error=text)
                    )
                    n = int((await conn.execute(stmt)).rowcount)
                    if n:
                        closed[owner or ""] = closed.get(owner or "", 0) + n
        return closed
