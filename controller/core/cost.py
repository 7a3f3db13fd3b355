"""What powering off and scaling to zero save (contract section 14): time powered on and time
awake per environment, the savings of the power lever from `cost.hourly_when_on`, and of the
idle lever from what the sleeping service's tasks would cost (`fargate_prices`).

Pure accounting, one step per pass: the time since the previous step is counted in the state
observed now. A longer gap (the controller was down) is counted only up to `MAX_STEP`: what
happened meanwhile is unknown, and unknown is never counted as saved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.core.records import CostRecord

MAX_STEP = timedelta(minutes=10)


@dataclass(frozen=True)
class CostStep:
    """What one step adds (for the counters)."""

    powered_on_seconds: float = 0.0
    awake_seconds: float = 0.0
    power_savings: float = 0.0
    idle_savings: float = 0.0


def month_of(at: datetime) -> str:
    return at.strftime("%Y-%m")


def account(
    record: CostRecord,
    now: datetime,
    powered_on: bool | None,
    awake: bool | None,
    hourly_when_on: float | None,
    hourly_when_awake: float | None = None,
) -> tuple[CostRecord, CostStep]:
    """`powered_on`/`awake`: as observed in this pass (None: unknown, nothing is counted).
    `hourly_when_awake`: what the service's tasks cost when awake (None: not known)."""
    month = month_of(now)
    if record.month != month:  # a new month starts from zero (the counters keep going)
        record = CostRecord(month=month, accounted_at=record.accounted_at)
    since = record.accounted_at
    record = replace(record, accounted_at=now)
    if since is None or now <= since:
        return record, CostStep()
    seconds = min(now - since, MAX_STEP).total_seconds()
    step = CostStep(
        powered_on_seconds=seconds if powered_on else 0.0,
        awake_seconds=seconds if awake else 0.0,
        power_savings=seconds / 3600 * hourly_when_on
        if powered_on is False and hourly_when_on
        else 0.0,
        idle_savings=seconds / 3600 * hourly_when_awake
        if powered_on is True and awake is False and hourly_when_awake
        else 0.0,
    )
    return (
        replace(
            record,
            powered_on_seconds=record.powered_on_seconds + step.powered_on_seconds,
            awake_seconds=record.awake_seconds + step.awake_seconds,
            power_savings=record.power_savings + step.power_savings,
            idle_savings=record.idle_savings + step.idle_savings,
        ),
        step,
    )
