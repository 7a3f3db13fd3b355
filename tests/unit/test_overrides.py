"""The environment the policies act on: the desired state with the runtime suspension applied."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord, Overrides, Suspension
from controller.engine.overrides import SuspensionView, effective, suspension

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ASKED = EnvironmentRecord(overrides=Overrides(Suspension("load test", NOW)))


def env(suspend: bool = False) -> Environment:
    return Environment.model_validate({"power": "on", "suspend": suspend})


def test_without_overrides_the_desired_state_is_acted_on_as_written() -> None:
    spec = env()
    assert effective(spec, EnvironmentRecord()) is spec
    assert suspension(spec, EnvironmentRecord()) is None


def test_a_suspension_asked_through_the_api_suspends_the_environment() -> None:
    assert effective(env(), ASKED).suspend is True
    assert suspension(env(), ASKED) == SuspensionView("api", "load test", NOW)


def test_the_desired_state_s_suspension_is_the_one_shown_when_both_hold() -> None:
    view = suspension(env(suspend=True), ASKED)
    assert view is not None and view.by == "desired_state"
    assert effective(env(suspend=True), EnvironmentRecord()).suspend is True
