"""Fuzzing the loader: mutations of the example `desired_state.yaml` (bytes inserted, deleted or
replaced, and YAML fragments that reach tags, anchors, aliases and nesting) are either valid or
refused with problems: parse_desired_state never raises anything but InvalidDesiredState, and
never needs its catch-all. `bench/fuzz_loader.py` runs many more of the same mutations."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.desired.loader import (
    UNEXPECTED_ERROR,
    InvalidDesiredState,
    parse_desired_state,
)

EXAMPLE = (Path(__file__).resolve().parents[2] / "desired_state.yaml").read_bytes()

# Structural fragments: each reaches a different path through the parser and the builder.
FRAGMENTS: tuple[bytes, ...] = (
    b"&a ",
    b"*a",
    b"&x [*x]",
    b"&m {k: *m}",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"- ",
    b"? ",
    b", ",
    b"\n",
    b"\n  ",
    b"\t",
    b"#",
    b"'",
    b'"',
    b"|",
    b">",
    b"---\n",
    b"...\n",
    b"%YAML 1.1\n",
    b"%TAG ! tag:example.com,2000:\n",
    b"!foo ",
    b"! ",
    b"!<%0A> ",
    b"!!float ",
    b"!!int ",
    b"!!bool ",
    b"!!null ",
    b"!!str ",
    b"!!binary ",
    b"!!timestamp ",
    b"!!set ",
    b"!!omap ",
    b"!!python/object/apply:os.system ",
    b"<<: ",
    b"=",
    b"~",
    b"on",
    b"true",
    b"1.0",
    b"0x1F",
    b"1:20:30",
    b".inf",
    b"99999999999999999999h",
    b"1" * 200,
    "\u0665m".encode(),
    "\u2028".encode(),
    "\u202e".encode(),
    "\ufeff".encode(),
    b"\x00",
    b"\x85",
    b"[" * 70,
    b"- " * 70,
)


def mutate(data: bytes, choices: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) mutations; positions wrap around the current length."""
    for kind, position, value in choices:
        at = position % (len(data) + 1)
        if kind == 0:  # insert a few bytes: printable ASCII mostly, any byte sometimes
            byte = value % 256 if value & 0x8000 else 32 + value % 95
            data = data[:at] + bytes([byte]) * (1 + value % 3) + data[at:]
        elif kind == 1:  # delete a run
            data = data[:at] + data[at + 1 + value % 40 :]
        elif kind == 2 and at < len(data):  # replace one byte
            data = data[:at] + bytes([value % 256]) + data[at + 1 :]
        else:  # insert a structural fragment
            data = data[:at] + FRAGMENTS[value % len(FRAGMENTS)] + data[at:]
    return data


def random_mutations(rng: random.Random) -> list[tuple[int, int, int]]:
    """The same mutations as the test's strategy, for the bench (no hypothesis needed)."""
    return [
        (rng.randrange(4), rng.randrange(len(EXAMPLE) + 1), rng.randrange(1 << 16))
        for _ in range(rng.randint(1, 6))
    ]


def check(text: str) -> bool:
    """True if the document is valid; InvalidDesiredState if not; anything else is a bug."""
    try:
        parse_desired_state(text, "fuzz.yaml")
    except InvalidDesiredState as exc:
        problems = exc.problems
    else:
        return True
    assert problems
    for problem in problems:
        line = str(problem)
        assert line.startswith("fuzz.yaml:")
        assert problem.line >= 1
        assert problem.column >= 1
        assert line.splitlines() == [line], line  # one line: no raw newline, NUL, ...
        assert "\x00" not in line
        assert not problem.message.startswith(UNEXPECTED_ERROR), line
    return False


MUTATION = st.tuples(
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=len(EXAMPLE)),
    st.integers(min_value=0, max_value=(1 << 16) - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_example_is_valid_or_a_list_of_positioned_problems(
    choices: list[tuple[int, int, int]],
) -> None:
    check(mutate(EXAMPLE, choices).decode("utf-8", errors="replace"))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_valid_or_a_list_of_positioned_problems(text: str) -> None:
    check(text)


def test_the_example_itself_is_valid() -> None:
    assert check(EXAMPLE.decode())
