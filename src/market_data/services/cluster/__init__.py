"""Several daemons on one PostgreSQL database: membership, leases, claimed work (member.py), and
how channels are spread over the members (assignment.py)."""

from market_data.services.cluster.assignment import assign, share_of
from market_data.services.cluster.member import (
    BACKFILL_WORK,
    GAP_REPAIR_WORK,
    LOOP_LEASE,
    ClusterMember,
    ClusterState,
    MemberInfo,
    channel_name,
    channel_series,
    series_key,
)

__all__ = [
    "BACKFILL_WORK",
    "GAP_REPAIR_WORK",
    "LOOP_LEASE",
    "ClusterMember",
    "ClusterState",
    "MemberInfo",
    "assign",
    "channel_name",
    "channel_series",
    "series_key",
    "share_of",
]
