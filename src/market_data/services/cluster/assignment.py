"""Which member streams which channel: rendezvous (highest-random-weight) hashing with a cap.

Every (channel, member) pair gets a weight from a hash of both names, the same on every member,
so each member computes the same assignment from the same list of live members without talking
to the others. Pairs are granted by falling weight, a member taking at most its share
(`n // m`, and `n % m` members one more): the spread is even within one channel, and since a
channel goes to the member that weighs it highest whenever that member has room, a member
joining or leaving moves few channels besides the ones it takes or gives up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

MAX_CHANNELS = 100_000  # bounds the pairs sorted: channels x members


def weight(channel: str, member: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{channel}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(channels: Iterable[str], members: Sequence[str]) -> dict[str, set[str]]:
    """member -> the channels it should hold, for every member (empty sets included)."""
    names = sorted(set(channels))
    ids = sorted(set(members))
    shares: dict[str, set[str]] = {m: set() for m in ids}
    if not ids or not names:
        return shares
    if len(names) * len(ids) > MAX_CHANNELS * 10:
        raise ValueError(f"{len(names)} channels over {len(ids)} members is too many to assign")
    base, extra = divmod(len(names), len(ids))
    pairs = sorted(
        ((weight(c, m), c, m) for c in names for m in ids), key=lambda p: (-p[0], p[1], p[2])
    )
    placed: set[str] = set()
    for _, channel, member in pairs:
        if channel in placed:
            continue
        held = len(shares[member])
        if held < base or (held == base and extra > 0):
            if held == base:
                extra -= 1
            shares[member].add(channel)
            placed.add(channel)
            if len(placed) == len(names):
                break
    return shares


def share_of(member: str, channels: Iterable[str], members: Sequence[str]) -> set[str]:
    """The channels `member` should hold when `members` are alive (it included)."""
    everyone = set(members) | {member}
    return assign(channels, sorted(everyone))[member]
