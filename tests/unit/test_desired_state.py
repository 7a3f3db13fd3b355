"""The desired-state schema and its error messages (`FILE:LINE:COLUMN: message`)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from controller.core.desired_state import DesiredState
from controller.core.durations import format_duration, parse_duration
from controller.desired.loader import InvalidDesiredState, parse_desired_state


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
        "allowed: power, region, suspend, terraform, service, idle"
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
