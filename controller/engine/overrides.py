"""The environment the policies act on: the desired state with the runtime overrides and the
schedule applied.

The power in force comes from, first to last: a suspension (nothing is done), a temporary
override, the schedule, the `power` field (contract section 10). A suspension from the API
suspends an environment the desired state does not; the desired state's `suspend: true` always
suspends, whatever the API says (it is what git reviewed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from controller.core.clock import utc_iso
from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord, PowerOverride

SuspendedBy = Literal["desired_state", "api"]
SUSPENDED_BY: tuple[SuspendedBy, ...] = ("desired_state", "api")
PowerSource = Literal["git", "schedule", "override", "suspend"]
POWER_SOURCES: tuple[PowerSource, ...] = ("git", "schedule", "override", "suspend")


@dataclass(frozen=True)
class SuspensionView:
    """Why an environment is suspended, as `/status` shows it."""

    by: SuspendedBy
    reason: str
    since: datetime | None  # None: the desired state's, whose commit time is not tracked


@dataclass(frozen=True)
class PowerInForce:
    power: Literal["on", "off"]
    source: PowerSource
    why: str | None  # what a decision's reason starts with when the power is not git's
    next_change: datetime | None  # the schedule's next transition
    override: PowerOverride | None


def suspension(spec: Environment, record: EnvironmentRecord) -> SuspensionView | None:
    """The suspension in force, the desired state's first."""
    if spec.suspend:
        return SuspensionView("desired_state", "suspend: true in the desired state", None)
    asked = record.overrides.suspension
    if asked is not None:
        return SuspensionView("api", asked.reason, asked.since)
    return None


def override_ended(spec: Environment, record: EnvironmentRecord, now: datetime) -> str | None:
    """Why the recorded power override no longer applies; None while it does (or if none)."""
    override = record.overrides.power
    if override is None:
        return None
    if override.expires_at is not None and now >= override.expires_at:
        return f"expired at {utc_iso(override.expires_at)}"
    if override.git_power != spec.power:
        return f"the desired state's power changed to {spec.power}"
    return None


def power_in_force(spec: Environment, record: EnvironmentRecord, now: datetime) -> PowerInForce:
    override = record.overrides.power
    if override is not None and override_ended(spec, record, now) is None:
        until = f"until {utc_iso(override.expires_at)}" if override.expires_at else "until cleared"
        why = f"override {override.power} {until} ({override.reason})"
        found = PowerInForce(override.power, "override", why, None, override)
    elif spec.schedule is not None and spec.power == "on":
        schedule = spec.schedule
        inside = schedule.is_active(now)
        upcoming = schedule.next_change(now)
        where = "inside" if inside else "outside"
        why = f"schedule: {'on' if inside else 'off'} {where} {schedule.describe()}"
        if upcoming is not None:
            why += f" until {schedule.format_instant(upcoming, since=now)}"
        found = PowerInForce("on" if inside else "off", "schedule", why, upcoming, None)
    else:
        found = PowerInForce(spec.power, "git", None, None, None)
    if suspension(spec, record) is not None:
        return PowerInForce(found.power, "suspend", found.why, found.next_change, found.override)
    return found


def effective(
    spec: Environment,
    record: EnvironmentRecord,
    now: datetime,
    in_force: PowerInForce | None = None,
) -> Environment:
    """`spec` as the policies must treat it now: suspended, and with the power in force
    (`in_force`, when the caller has it already: the schedule's search is not free)."""
    update: dict[str, object] = {}
    if not spec.suspend and record.overrides.suspension is not None:
        update["suspend"] = True
    power = (in_force or power_in_force(spec, record, now)).power
    if power != spec.power:
        update["power"] = power
    return spec.model_copy(update=update) if update else spec
