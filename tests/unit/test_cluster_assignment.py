"""The spread of channels over members (rendezvous hashing with a cap): even, the same on every
member, and few moves when a member joins or leaves."""

from __future__ import annotations

import pytest

from market_data.services.cluster import assign, share_of

CHANNELS = [f"T{i:02d}USD/{tf}" for i in range(24) for tf in ("1m", "1h")]


def owners(shares: dict[str, set[str]]) -> dict[str, str]:
    return {channel: member for member, held in shares.items() for channel in held}


@pytest.mark.parametrize(("channels", "members"), [(48, 3), (48, 5), (47, 3), (10, 4), (3, 5)])
def test_every_channel_has_one_owner_and_shares_differ_by_one_at_most(
    channels: int, members: int
) -> None:
    names = CHANNELS[:channels]
    ids = [f"m{i}" for i in range(members)]
    shares = assign(names, ids)
    assert sorted(owners(shares)) == sorted(names)
    assert sum(len(held) for held in shares.values()) == channels
    sizes = [len(held) for held in shares.values()]
    assert max(sizes) - min(sizes) <= 1


def test_three_members_hold_sixteen_of_forty_eight_each() -> None:
    assert [len(held) for held in assign(CHANNELS, ["a", "b", "c"]).values()] == [16, 16, 16]


def test_every_member_computes_the_same_spread_whatever_the_order() -> None:
    first = assign(CHANNELS, ["a", "b", "c"])
    assert assign(reversed(CHANNELS), ["c", "a", "b"]) == first
    assert share_of("b", CHANNELS, ["a", "c"]) == first["b"]  # itself counted once


def test_a_joining_member_moves_little_besides_its_own_share() -> None:
    before = owners(assign(CHANNELS, ["a", "b", "c"]))
    after = owners(assign(CHANNELS, ["a", "b", "c", "d"]))
    moved = [c for c in CHANNELS if before[c] != after[c]]
    to_d = [c for c in moved if after[c] == "d"]
    assert len(to_d) == 12  # its share
    assert len(moved) - len(to_d) <= 4  # a random respread would move about 27 of 36


def test_a_leaving_member_s_channels_go_to_the_others_and_little_else_moves() -> None:
    before = owners(assign(CHANNELS, ["a", "b", "c"]))
    after = owners(assign(CHANNELS, ["a", "b"]))
    survivors = [c for c in CHANNELS if before[c] != "c"]
    # A few move between a and b to keep the shares even; a random respread would move ~16.
    assert sum(1 for c in survivors if after[c] != before[c]) <= 4
    assert list(after.values()).count("a") == 24


def test_no_members_or_no_channels_assign_nothing() -> None:
    assert assign(CHANNELS, []) == {}
    assert assign([], ["a"]) == {"a": set()}
