"""The desired-state schema and its error messages (`FILE:LINE:COLUMN: message`)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from controller.core.desired_state import DesiredState
from controller.core.durations import format_duration, parse_duration
from controller.desired.loader import InvalidDesiredState, Problem, parse_desired_state


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidDesiredState) as caught:
        parse_desired_state(text, "ds.yaml")
    return [str(p) for p in caught.value.problems]


def load(text: str) -> DesiredState:
    return parse_desired_state(text, "ds.yaml").state


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2h", 7200), ("1m30s", 90), (" 10s ", 10)],
)
def test_durations_parse_hours_minutes_seconds(text: str, expected: int) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "5 m", "1d", "m", "-5m", "5m1h", "1.5m"])
def test_durations_without_a_known_unit_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_durations_format_for_humans() -> None:
    assert [format_duration(s) for s in (0, 59, 312, 3600, 5412)] == [
        "0s",
        "59s",
        "5m12s",
        "1h",
        "1h30m12s",
    ]


@pytest.mark.parametrize(
    ("written", "power"),
    [("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"), ('"on"', "on"), ("yes", "on")],
)
def test_power_accepts_yaml_1_1_booleans(written: str, power: str) -> None:
    state = load(f"version: 1\nenvironments:\n  staging:\n    power: {written}\n")
    assert state.environments["staging"].power == power


def test_full_example_file_validates() -> None:
    with open("desired_state.yaml", encoding="utf-8") as handle:
        state = parse_desired_state(handle.read(), "desired_state.yaml").state
    assert state.environments


def test_unknown_key_is_reported_with_its_position_and_a_suggestion() -> None:
    text = "version: 1\nenvironments:\n  staging:\n    power: on\n    suspnd: true\n"
    assert problems(text) == [
        "ds.yaml:5:5: environments.staging.suspnd: unknown key 'suspnd' (did you mean 'suspend'?); "
        "allowed: power, region, suspend, schedule, terraform, service, idle, cost"
    ]


def test_every_problem_is_reported_once_in_file_order() -> None:
    text = (
        "version: 1\n"
        "environments:\n"
        "  staging:\n"
        "    power: on\n"
        "    service: {cluster: c, name: s}\n"
        "    idle:\n"
        "      after: five\n"
        "      active_count: 0\n"
        "  Bad_Name:\n"
        "    power: maybe\n"
    )
    assert problems(text) == [
        "ds.yaml:7:14: environments.staging.idle.after: invalid duration 'five': expected a number "
        "of hours, minutes and/or seconds such as 90s, 5m or 1h30m",
        "ds.yaml:8:21: environments.staging.idle.active_count: "
        "Input should be greater than or equal to 1",
        "ds.yaml:9:3: environments.Bad_Name: invalid environment name 'Bad_Name': use lowercase "
        "letters, digits and '-'",
        "ds.yaml:10:12: environments.Bad_Name.power: Input should be 'on' or 'off'",
    ]


def test_duplicate_environment_is_an_error_not_a_silent_override() -> None:
    text = "version: 1\nenvironments:\n  a:\n    power: on\n  a:\n    power: off\n"
    assert problems(text) == [
        "ds.yaml:5:3: environments.a: duplicate key 'a' (first defined at line 3)"
    ]


def test_duplicate_field_is_an_error() -> None:
    text = "version: 1\nenvironments:\n  a:\n    power: on\n    power: off\n"
    assert "duplicate key 'power'" in problems(text)[0]


def test_missing_power_points_at_the_environment() -> None:
    assert problems("version: 1\nenvironments:\n  a:\n    suspend: false\n") == [
        "ds.yaml:3:3: environments.a: missing required key 'power'"
    ]


def test_wrong_version_is_refused() -> None:
    assert problems("version: 2\nenvironments: {}\n")[0].startswith("ds.yaml:1:10: version:")


def test_idle_without_service_is_refused() -> None:
    text = "version: 1\nenvironments:\n  a:\n    power: on\n    idle: {after: 5m}\n"
    assert "`idle` needs `service`" in problems(text)[0]


def test_codebuild_runner_needs_a_project_and_cli_a_workdir() -> None:
    base = "version: 1\nenvironments:\n  a:\n    power: on\n    terraform: {runner: %s}\n"
    assert "needs `project`" in problems(base % "codebuild")[0]
    assert "needs `workdir`" in problems(base % "cli")[0]


def test_invalid_yaml_reports_the_position() -> None:
    found = problems("version: 1\nenvironments:\n  a: [\n")
    assert len(found) == 1
    assert found[0].startswith("ds.yaml:4:1: invalid YAML")


def test_empty_file_and_non_mapping_are_refused() -> None:
    assert "empty" in problems("")[0]
    assert "expected a mapping" in problems("- a\n")[0]


def test_environment_names_keep_yaml_keywords_as_strings() -> None:
    # a key `on` would be a boolean in YAML 1.1; keys stay text, so the name is checked as written
    assert (
        load("version: 1\nenvironments:\n  on:\n    power: off\n").environments["on"].power == "off"
    )


def test_schema_is_json_and_describes_power_and_durations() -> None:
    schema = DesiredState.model_json_schema()
    text = json.dumps(schema)
    assert '"on"' in text
    assert "1h30m" in text
    assert schema["additionalProperties"] is False


# --- hostile input: every case below once ended in a traceback or was wrongly accepted ---------

ENV = "version: 1\nenvironments:\n  a:\n    power: on\n"
IDLE = ENV + "    service: {cluster: c, name: s}\n    idle: {after: %s}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nenvironments:\n  a:\n    power: !foo on\n",
            "ds.yaml:4:12: environments.a.power: unsupported tag '!foo' (only plain strings, "
            "numbers, booleans and null are used)",
        ),
        ("version: !!float\n", "ds.yaml:1:10: version: invalid !!float value ''"),
        ("version: !!int ''\n", "ds.yaml:1:10: version: invalid !!int value ''"),
        ("version: !!timestamp soon\n", "ds.yaml:1:10: version: invalid !!timestamp value 'soon'"),
        (
            "version: 1\nenvironments:\n  a:\n    power: !!binary '@@'\n",
            "ds.yaml:4:12: environments.a.power: unsupported tag '!!binary' (only plain strings, "
            "numbers, booleans and null are used)",
        ),
        (
            "version: 1\nenvironments: !!set {a}\n",
            "ds.yaml:2:15: environments: unsupported tag '!!set'",
        ),
        (
            "version: 1\nenvironments: !!omap [a: 1]\n",
            "ds.yaml:2:15: environments: unsupported tag '!!omap'",
        ),
        (
            "version: 1\n!!python/name:os.system x: 1\n",
            "ds.yaml:2:1: x: unsupported tag '!!python/name:os.system' on a key",
        ),
    ],
)
def test_unknown_or_unusual_tags_are_positioned_problems(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_a_refused_value_is_reported_once_not_again_by_the_schema() -> None:
    # `power` is required: the refused value must not also read as a missing key
    assert problems(ENV.replace("power: on", "power: !foo on")) == [
        "ds.yaml:4:12: environments.a.power: unsupported tag '!foo' (only plain strings, "
        "numbers, booleans and null are used)"
    ]


def test_plain_merge_and_value_indicators_are_read_as_text() -> None:
    # YAML 1.1 resolves a plain `<<` and `=` to tags SafeLoader cannot construct
    assert problems("version: 1\nenvironments:\n  a:\n    power: <<\n") == [
        "ds.yaml:4:12: environments.a.power: Input should be 'on' or 'off'"
    ]
    assert problems("version: =\n") == ["ds.yaml:1:10: version: expected the integer 1, got '='"]


def test_overflowing_duration_is_a_problem() -> None:
    assert problems(IDLE % "99999999999999999999h") == [
        "ds.yaml:6:19: environments.a.idle.after: invalid duration '99999999999999999999h': "
        "too long"
    ]
    assert problems(IDLE % "99999999999h")[0].endswith("too long")  # past timedelta's range


def test_overflowing_duration_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 5000 + "s")


@pytest.mark.parametrize("digits", ["\u0665m", "\uff15m", "\u0967h"])
def test_durations_with_non_ascii_digits_are_refused(digits: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(digits)
    assert "invalid duration" in problems(IDLE % digits)[0]


def test_region_with_non_ascii_digits_is_refused() -> None:
    assert (
        "region: String should match pattern" in problems(ENV + "    region: eu-west-\u0663\n")[0]
    )


def test_duration_schema_pattern_takes_ascii_digits_only() -> None:
    text = json.dumps(DesiredState.model_json_schema())
    assert "[0-9]+h" in text
    assert "\\\\d" not in text


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("true", "version: expected the integer 1, got True"),
        ("1.0", "version: expected the integer 1, got 1.0"),
        ("'1'", "version: expected the integer 1, got '1'"),
    ],
)
def test_version_must_be_the_integer_1(written: str, expected: str) -> None:
    assert problems(f"version: {written}\nenvironments: {{}}\n") == [f"ds.yaml:1:10: {expected}"]


@pytest.mark.parametrize("written", ["true", "2.0", "'3'"])
def test_active_count_must_be_an_integer(written: str) -> None:
    text = ENV + "    service: {cluster: c, name: s}\n"
    text += f"    idle: {{after: 5m, active_count: {written}}}\n"
    assert problems(text) == [
        "ds.yaml:6:37: environments.a.idle.active_count: Input should be a valid integer"
    ]


@pytest.mark.parametrize("written", ["'yes'", "1", "'true'"])
def test_suspend_must_be_a_boolean(written: str) -> None:
    assert problems(ENV + f"    suspend: {written}\n") == [
        "ds.yaml:5:14: environments.a.suspend: Input should be a valid boolean"
    ]


def test_suspend_keeps_accepting_yaml_booleans() -> None:
    assert load(ENV + "    suspend: yes\n").environments["a"].suspend is True


def test_problem_lines_escape_control_characters_from_the_input() -> None:
    text = 'version: 1\nenvironments:\n  "a\\nb\\0\\u2028\\u202e":\n    power: on\n'
    (line,) = problems(text)
    assert line == (
        "ds.yaml:3:3: environments.a\\nb\\x00\\u2028\\u202e: invalid environment name "
        "'a\\nb\\x00\\u2028\\u202e': use lowercase letters, digits and '-'"
    )
    assert line.splitlines() == [line]


def test_problem_escapes_its_file_name_and_message() -> None:
    problem = Problem("a\nb.yaml", 1, 1, "bad\r\nthing\x00")
    assert str(problem) == "a\\nb.yaml:1:1: bad\\r\\nthing\\x00"


def test_problem_messages_echoing_huge_input_are_cut_short() -> None:
    (line,) = problems(IDLE % ("x" * 100_000))
    assert len(line) < 600
    assert line.endswith("…")


def test_forbidden_characters_are_reported_at_their_line() -> None:
    assert problems("version: 1\nenvironments:\n  a: \x00\n") == [
        "ds.yaml:3:6: invalid YAML: character '\\x00' is not allowed"
    ]


def test_lone_surrogate_is_a_problem() -> None:
    assert problems("version: 1\nx: \ud800\n") == [
        "ds.yaml:2:4: invalid text: a lone surrogate is not UTF-8"
    ]


def test_long_plain_number_is_refused_without_being_read() -> None:
    # PyYAML reads a sexagesimal `1:2:3:...` in quadratic time and its regex takes 64 MB
    found = problems("version: 1" + ":2" * 400_000 + "\n")
    assert found == [
        "ds.yaml:1:10: version: a plain value of 800001 characters that reads as a number or a "
        "date is too long (at most 100); quote it if it is text"
    ]
    assert "too long" in problems("version: !!int 1" + ":2" * 400_000 + "\n")[0]


def test_long_plain_text_stays_text() -> None:
    long_name = "cluster-" + "x" * 200
    state = load(ENV + f"    service: {{cluster: {long_name}, name: s}}\n")
    service = state.environments["a"].service
    assert service is not None
    assert service.cluster == long_name


def test_key_named_like_pydantic_key_marker_is_an_unknown_key() -> None:
    assert problems("version: 1\n'[key]': 1\n") == [
        "ds.yaml:2:1: [key]: unknown key '[key]'; allowed: version, environments, notifications"
    ]


def test_any_unexpected_exception_becomes_a_problem_naming_its_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(DesiredState, "model_validate", broken)
    assert problems(ENV) == [
        "ds.yaml:1:1: unexpected error while reading the document: KeyError: 'surprise'"
    ]
