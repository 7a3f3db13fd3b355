"""Sharding for very large fleets (contract section 12): `CONTROLLER_SHARD=I/N` owns the
environments whose name hashes to shard I of N. The hash is SHA-256 (not Python's `hash`, which
changes from process to process), so every controller agrees on who owns what."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def shard_of(name: str, count: int) -> int:
    """The shard (1 to `count`) that owns the environment `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count + 1


def owner(shard: tuple[int, int]) -> Callable[[str], bool]:
    index, count = shard
    return lambda name: shard_of(name, count) == index
