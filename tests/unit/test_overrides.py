"""The environment the policies act on: the desired state with the runtime suspension applied."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord, Overrides, PowerOverride, Suspension
from controller.engine.overrides import (
    SuspensionView,
    effective,
    override_ended,
    power_in_force,
    suspension,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ASKED = EnvironmentRecord(overrides=Overrides(Suspension("load test", NOW)))


def env(suspend: bool = False) -> Environment:
    return Environment.model_validate({"power": "on", "suspend": suspend})


def test_without_overrides_the_desired_state_is_acted_on_as_written() -> None:
    spec = env()
    assert effective(spec, EnvironmentRecord(), NOW) is spec
    assert suspension(spec, EnvironmentRecord()) is None


def test_a_suspension_asked_through_the_api_suspends_the_environment() -> None:
    assert effective(env(), ASKED, NOW).suspend is True
    assert suspension(env(), ASKED) == SuspensionView("api", "load test", NOW)


def test_the_desired_state_s_suspension_is_the_one_shown_when_both_hold() -> None:
    view = suspension(env(suspend=True), ASKED)
    assert view is not None and view.by == "desired_state"
    assert effective(env(suspend=True), EnvironmentRecord(), NOW).suspend is True


OFFICE = {
    "timezone": "Europe/Paris",
    "periods": [{"days": "mon-fri", "from": "08:00", "to": "20:00"}],
}
WEDNESDAY_NOON = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # 12:00 in Paris
WEDNESDAY_NIGHT = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)  # 22:00 in Paris


def scheduled(power: str = "on") -> Environment:
    return Environment.model_validate({"power": power, "schedule": OFFICE})


def overridden(
    power: Literal["on", "off"], expires: datetime | None, git: str = "on"
) -> EnvironmentRecord:
    override = PowerOverride(power, "demo", NOW, expires, git)  # type: ignore[arg-type]
    return EnvironmentRecord(overrides=Overrides(power=override))


def test_the_schedule_sets_the_power_inside_and_outside_its_periods() -> None:
    inside = power_in_force(scheduled(), EnvironmentRecord(), WEDNESDAY_NOON)
    assert (inside.power, inside.source) == ("on", "schedule")
    assert inside.next_change == datetime(2026, 11, 25, 19, 0, tzinfo=UTC)
    assert (
        inside.why
        == "schedule: on inside mon-fri 08:00-20:00 Europe/Paris until 20:00 Europe/Paris"
    )
    outside = power_in_force(scheduled(), EnvironmentRecord(), WEDNESDAY_NIGHT)
    assert (outside.power, outside.source) == ("off", "schedule")
    assert effective(scheduled(), EnvironmentRecord(), WEDNESDAY_NIGHT).power == "off"


def test_power_off_in_git_is_off_whatever_the_schedule_says() -> None:
    found = power_in_force(scheduled("off"), EnvironmentRecord(), WEDNESDAY_NOON)
    assert (found.power, found.source) == ("off", "git")


def test_an_override_comes_before_the_schedule_until_it_expires() -> None:
    record = overridden("on", WEDNESDAY_NIGHT + timedelta(hours=2))
    found = power_in_force(scheduled(), record, WEDNESDAY_NIGHT)
    assert (found.power, found.source) == ("on", "override")
    assert override_ended(scheduled(), record, WEDNESDAY_NIGHT) is None
    later = WEDNESDAY_NIGHT + timedelta(hours=2)
    assert power_in_force(scheduled(), record, later).source == "schedule"
    assert override_ended(scheduled(), record, later) == "expired at 2026-11-25T23:00:00Z"


def test_an_override_on_starts_an_environment_git_keeps_off() -> None:
    record = overridden("on", None, git="off")
    found = power_in_force(scheduled("off"), record, WEDNESDAY_NOON)
    assert (found.power, found.source) == ("on", "override")


def test_a_new_revision_that_changes_power_ends_the_override() -> None:
    record = overridden("off", None, git="on")
    assert override_ended(scheduled("off"), record, WEDNESDAY_NOON) == (
        "the desired state's power changed to off"
    )
    assert power_in_force(scheduled("off"), record, WEDNESDAY_NOON).source == "git"


def test_a_suspension_comes_first() -> None:
    record = replace(overridden("on", None), overrides=Overrides(ASKED.overrides.suspension))
    assert power_in_force(scheduled(), record, WEDNESDAY_NIGHT).source == "suspend"
