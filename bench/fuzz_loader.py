"""Fuzz the desired-state loader outside the test suite: N random mutations of the example
`desired_state.yaml` (the test suite's mutations, tests/unit/test_loader_fuzz.py), each parsed
once. Prints how many were valid, invalid (InvalidDesiredState with problems) and crashed (any
other exception, or a problem from the loader's catch-all), the slowest parse, and the time.
The target is 0 crashes.

    .venv/bin/python bench/fuzz_loader.py [--count 20000] [--seed 1] [--show 5] [--pure-python]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from controller.desired import loader
from controller.desired.loader import UNEXPECTED_ERROR, InvalidDesiredState, parse_desired_state
from tests.unit.test_loader_fuzz import EXAMPLE, mutate, random_mutations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="mutations to run")
    parser.add_argument("--seed", type=int, default=1, help="random seed (reproducible runs)")
    parser.add_argument("--show", type=int, default=5, help="crashes to print in full")
    parser.add_argument(
        "--pure-python", action="store_true", help="PyYAML's Python parser instead of libyaml"
    )
    args = parser.parse_args()
    if args.pure_python:
        loader._PARSER = yaml.SafeLoader

    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    crashes: list[tuple[str, str]] = []
    slowest = (0.0, "")
    started = time.perf_counter()
    for _ in range(args.count):
        text = mutate(EXAMPLE, random_mutations(rng)).decode("utf-8", errors="replace")
        began = time.perf_counter()
        try:
            parse_desired_state(text, "fuzz.yaml")
            outcomes["valid"] += 1
        except InvalidDesiredState as exc:
            caught = [p for p in exc.problems if p.message.startswith(UNEXPECTED_ERROR)]
            if caught:
                outcomes["crashed"] += 1
                crashes.append((text, str(caught[0])))
            else:
                outcomes["invalid"] += 1
        except BaseException:  # the point of the bench: count what escapes, whatever it is
            outcomes["crashed"] += 1
            crashes.append((text, traceback.format_exc(limit=3)))
        elapsed = time.perf_counter() - began
        if elapsed > slowest[0]:
            slowest = (elapsed, text)
    total = time.perf_counter() - started

    parser_name = "pure-Python" if args.pure_python else "libyaml"
    print(
        f"{args.count} mutations ({parser_name} parser) in {total:.1f} s "
        f"({total / args.count * 1000:.2f} ms each): "
        f"{outcomes['valid']} valid, {outcomes['invalid']} invalid, {outcomes['crashed']} crashed"
    )
    print(f"slowest parse: {slowest[0] * 1000:.1f} ms ({len(slowest[1])} characters)")
    for text, error in crashes[: args.show]:
        print(f"--- crash on {text!r}\n{error}")
    return 1 if outcomes["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())
