"""Sharding (contract section 12): every environment has exactly one owner, the same in every
process, and shards are about even."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.core.settings import Settings
from controller.core.shards import owner, shard_of

NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(NAMES, st.integers(1, 64))
def test_every_environment_is_owned_by_exactly_one_shard(name: str, count: int) -> None:
    owners = [i for i in range(1, count + 1) if owner((i, count))(name)]
    assert owners == [shard_of(name, count)]


def test_the_owner_is_the_same_in_another_process() -> None:
    names = [f"env-{i}" for i in range(50)]
    here = [shard_of(n, 7) for n in names]
    code = (
        f"from controller.core.shards import shard_of; print([shard_of(n, 7) for n in {names!r}])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert there.strip() == str(here)


def test_a_thousand_environments_spread_about_evenly_over_four_shards() -> None:
    counts = Counter(shard_of(f"env-{i}", 4) for i in range(1000))
    assert set(counts) == {1, 2, 3, 4}
    assert all(200 <= n <= 300 for n in counts.values())


@pytest.mark.parametrize("value", ["0/4", "5/4", "2", "a/b", "2/4/1", "1/1001"])
def test_a_shard_setting_that_names_no_shard_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="shard"):
        Settings(shard=value, state_store="dynamodb://t")


def test_leader_election_needs_the_state_store_in_the_same_table() -> None:
    with pytest.raises(ValidationError, match="CONTROLLER_STATE_STORE=dynamodb://t"):
        Settings(leader_election="dynamodb://t", state_store="file://x.json")
    with pytest.raises(ValidationError, match="dynamodb://TABLE"):
        Settings(leader_election="redis://x", state_store="redis://x")
    with pytest.raises(ValidationError, match="shards share their records in DynamoDB"):
        Settings(shard="1/2", state_store="file://x.json")
    ok = Settings(leader_election="dynamodb://t", state_store="dynamodb://t", shard="2/4")
    assert ok.shard_of == (2, 4)
