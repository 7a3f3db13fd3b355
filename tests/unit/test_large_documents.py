"""A large fleet in one document: the node limit grows with CONTROLLER_MAX_DESIRED_STATE_BYTES
(10,000 nodes per MiB), so a thousand environments load once the byte limit is raised, and an
alias bomb is refused as early as before."""

from __future__ import annotations

import pytest

from controller.desired.loader import InvalidDesiredState, parse_desired_state
from controller.desired.yaml_limits import max_nodes

MIB = 1024 * 1024


def fleet(size: int) -> str:
    return "version: 1\nenvironments:\n" + "".join(
        f"  env-{i}:\n    power: on\n    service: {{cluster: c, name: s-{i}}}\n"
        "    idle: {after: 5m}\n"
        for i in range(size)
    )


def test_the_node_limit_is_10000_per_mib_of_the_byte_limit() -> None:
    assert max_nodes(MIB) == 10_000
    assert max_nodes(1000) == 10_000  # never below the contract's
    assert max_nodes(4 * MIB) == 40_000


def test_a_thousand_environments_load_once_the_byte_limit_is_raised() -> None:
    text = fleet(1000)
    with pytest.raises(InvalidDesiredState, match="more than 10,000 nodes"):
        parse_desired_state(text, "ds.yaml")
    loaded = parse_desired_state(text, "ds.yaml", max_bytes=2 * MIB)
    assert len(loaded.state.environments) == 1000


def test_an_alias_bomb_is_refused_under_a_raised_limit_too() -> None:
    levels = ["a: &a [" + ",".join(['"x"'] * 9) + "]"]
    levels += [
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]"
        for p, n in zip("abcdef", "bcdefg", strict=True)
    ]
    with pytest.raises(InvalidDesiredState, match="more than 40,000 nodes"):
        parse_desired_state("\n".join(levels) + "\n", "bomb.yaml", max_bytes=4 * MIB)
