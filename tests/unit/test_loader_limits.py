"""The limits on a desired-state document (contract section 13): size, nodes after alias
expansion, depth. Hostile documents are refused quickly, in little memory, with a
`FILE:LINE:COLUMN` problem, whichever YAML parser PyYAML has (libyaml or pure Python)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from controller.core.settings import Settings
from controller.desired import file_source, loader
from controller.desired.file_source import FileSource, read_desired_state_file
from controller.desired.loader import InvalidDesiredState, parse_desired_state
from controller.wiring import open_source

ROOT = Path(__file__).resolve().parents[2]
VALID = "version: 1\nenvironments:\n  a:\n    power: on\n"


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" shape: `levels` anchors of 9 aliases each, 9**levels strings once
    expanded. Tests in this process use 6 levels (half a million nodes: 50 times the limit, yet
    harmless if the limit regressed); the full 9 levels (342 bytes, gigabytes once expanded)
    only run in a child process with a capped address space."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"lol"'] * 9) + "]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int) -> str:
    return "version: 1\nenvironments: " + "[" * levels + "]" * levels + "\n"


def problems(text: str, **kwargs: int) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        parse_desired_state(text, "ds.yaml", **kwargs)
    return [str(p) for p in caught.value.problems]


@pytest.fixture(params=["libyaml", "pure-python"], autouse=True)
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every limit holds with both parsers PyYAML may have."""
    if request.param == "pure-python":
        monkeypatch.setattr(loader, "_PARSER", yaml.SafeLoader)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    parser: str = request.param
    return parser


# --- size -------------------------------------------------------------------------------------


def test_document_over_the_byte_limit_is_refused_before_parsing() -> None:
    text = VALID + "#" * (1024 * 1024)
    assert problems(text) == [
        "ds.yaml:1:1: the document is larger than the limit of 1,048,576 bytes "
        "(CONTROLLER_MAX_DESIRED_STATE_BYTES)"
    ]


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    text = VALID + "# " + "é" * 60  # 62 characters, 122 bytes
    assert parse_desired_state(text, "ds.yaml", max_bytes=len(text.encode()))
    assert "larger than the limit of" in problems(text, max_bytes=len(text.encode()) - 1)[0]


def test_file_over_the_limit_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * 5000)
    with pytest.raises(InvalidDesiredState) as caught:
        read_desired_state_file(str(path), max_bytes=1000)
    assert str(caught.value) == (
        f"{path}:1:1: the document is larger than the limit of 1,000 bytes "
        "(CONTROLLER_MAX_DESIRED_STATE_BYTES)"
    )


async def test_byte_limit_setting_reaches_the_file_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text(VALID + "#" * 200)
    monkeypatch.setenv("CONTROLLER_MAX_DESIRED_STATE_BYTES", "100")
    settings = Settings(desired_state=str(path))
    assert settings.max_desired_state_bytes == 100
    source = open_source(str(path), settings)
    snapshot = await source.fetch()
    assert snapshot.loaded is None
    assert "larger than the limit of 100 bytes" in str(snapshot.problems[0])


def test_byte_limit_defaults_to_one_mebibyte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTROLLER_MAX_DESIRED_STATE_BYTES", raising=False)
    assert Settings().max_desired_state_bytes == 1024 * 1024


# --- nodes after alias expansion ---------------------------------------------------------------


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_node_limit() -> None:
    assert problems(alias_bomb(6)) == [
        "ds.yaml:5:8: more than 10,000 nodes (after expanding alias *d): refused "
        "(an alias counts as a copy of what it refers to)"
    ]


def test_alias_bomb_is_refused_fast_and_in_little_memory(yaml_parser: str) -> None:
    """Measured in a child process with a 1 GiB address-space cap, so that a regression fails
    this test instead of taking the machine's memory (the bomb expands to gigabytes)."""
    script = f"""
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
sys.path.insert(0, {str(ROOT)!r})
import yaml
from controller.desired import loader
if {yaml_parser == "pure-python"}:
    loader._PARSER = yaml.SafeLoader
text = sys.stdin.read()
tracemalloc.start()
started = time.perf_counter()
try:
    loader.parse_desired_state(text, "bomb.yaml")
    problems = []
except loader.InvalidDesiredState as exc:
    problems = [str(p) for p in exc.problems]
print(json.dumps({{"seconds": time.perf_counter() - started,
                   "peak": tracemalloc.get_traced_memory()[1], "problems": problems}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=alias_bomb(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout)
    assert measured["problems"] == [
        "bomb.yaml:5:8: more than 10,000 nodes (after expanding alias *d): refused "
        "(an alias counts as a copy of what it refers to)"
    ]
    assert measured["seconds"] < 1.0
    assert measured["peak"] < 50 * 1024 * 1024


def test_node_limit_is_ten_thousand_nodes() -> None:
    # a sequence and its items are nodes: 1 + 9,999 is at the limit, one more is over it
    at_limit = "[" + ",".join(["x"] * 9_999) + "]"
    assert problems(at_limit) == [
        "ds.yaml:1:1: expected a mapping with `version` and `environments`"
    ]
    over = "[" + ",".join(["x"] * 10_000) + "]"
    assert problems(over) == [
        f"ds.yaml:1:{2 + 2 * 9_999}: more than 10,000 nodes: refused "
        "(an alias counts as a copy of what it refers to)"
    ]


def test_aliases_are_counted_as_copies_of_what_they_refer_to() -> None:
    # 102 nodes written, 10,002 once the 99 aliases are expanded
    text = "a: &a [" + ",".join(["x"] * 99) + "]\nb: [" + ",".join(["*a"] * 99) + "]\n"
    assert "more than 10,000 nodes (after expanding alias *a)" in problems(text)[0]


def test_recursive_alias_is_refused_where_it_is_written() -> None:
    assert problems("version: 1\nenvironments: &x [*x]\n") == [
        "ds.yaml:2:19: recursive alias *x: it refers to a node that contains it"
    ]
    assert problems("version: 1\nenvironments: &m {a: *m}\n") == [
        "ds.yaml:2:22: recursive alias *m: it refers to a node that contains it"
    ]


def test_undefined_alias_is_refused_where_it_is_written() -> None:
    assert problems("version: *nope\n") == ["ds.yaml:1:10: undefined alias *nope"]


def test_anchors_and_aliases_within_the_limits_still_work() -> None:
    text = "version: 1\nenvironments:\n  a: &env\n    power: on\n    suspend: true\n  b: *env\n"
    state = parse_desired_state(text, "ds.yaml").state
    assert state.environments["b"].suspend is True


# --- depth -------------------------------------------------------------------------------------


def test_sixty_four_levels_of_nesting_are_allowed_and_sixty_five_are_not() -> None:
    # the top mapping is level 1, so 63 brackets reach level 64; the 64th opens level 65
    assert problems(nested(63)) == [
        "ds.yaml:2:15: environments: Input should be a valid dictionary"
    ]
    assert problems(nested(64)) == ["ds.yaml:2:78: nested deeper than 64 levels: refused"]


def test_five_thousand_levels_of_nesting_are_refused_without_recursion_error() -> None:
    found = problems(nested(5000))
    assert len(found) == 1
    assert found[0].startswith("ds.yaml:2:")
    assert found[0].endswith("nested deeper than 64 levels: refused")


def test_deeply_nested_block_sequences_are_refused() -> None:
    assert problems("- " * 5000 + "x\n") == ["ds.yaml:1:129: nested deeper than 64 levels: refused"]


def test_depth_counts_what_an_alias_refers_to() -> None:
    text = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert problems(text) == [
        "ds.yaml:2:34: nested deeper than 64 levels (after expanding alias *a): refused"
    ]


# --- the event loop ----------------------------------------------------------------------------


async def test_file_source_reads_and_parses_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text(VALID)
    threads: list[int] = []
    real_parse = loader.parse_desired_state

    def recording_parse(text: str, file: str, **options: int) -> loader.LoadedDesiredState:
        threads.append(threading.get_ident())
        return real_parse(text, file, **options)

    monkeypatch.setattr(file_source, "parse_desired_state", recording_parse)

    snapshot = await FileSource(str(path)).fetch()
    assert snapshot.loaded is not None
    assert threads
    assert threading.get_ident() not in threads  # this test runs on the loop's thread


async def test_file_source_reports_an_oversized_file_as_invalid_with_a_revision(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_bytes(b"#" * 300 + "é".encode() * 10)  # the read cuts a character in two
    snapshot = await FileSource(str(path), max_bytes=301).fetch()
    assert snapshot.loaded is None
    assert snapshot.revision.startswith("sha256:")
    assert "larger than the limit of 301 bytes" in snapshot.problems[0].message
