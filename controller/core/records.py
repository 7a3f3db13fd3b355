"""Everything the controller persists about an environment, in one place.

AWS does not record what the policies need to remember across passes and restarts: when the
service last woke and fell asleep, the Terraform run in flight (written *before* it starts), past
run durations, the overrides set through the API. One `EnvironmentRecord` per environment holds
it, versioned for optimistic writes, and serialised by a pydantic TypeAdapter: the JSON the state
stores keep is exactly these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from statistics import median
from typing import Any, Literal

from pydantic import AwareDatetime, TypeAdapter, ValidationError

PowerState = Literal["STOPPED", "STARTING", "RUNNING", "STOPPING", "ERROR"]
POWER_STATES: tuple[PowerState, ...] = ("STOPPED", "STARTING", "RUNNING", "STOPPING", "ERROR")
Operation = Literal["apply", "destroy"]
# the earlier infrastructure manager's figures, used until the environment has run history
DEFAULT_DURATIONS: dict[Operation, timedelta] = {
    "apply": timedelta(minutes=15),
    "destroy": timedelta(minutes=10),
}
DURATION_HISTORY = 5


@dataclass(frozen=True)
class IdleRecord:
    """What the idle policy has seen of the service's sleep and wake.

    ECS does not record when desiredCount last changed, so the controller keeps it.
    """

    awake_since: AwareDatetime | None = None
    asleep_since: AwareDatetime | None = None
    # lower bound of the last request's time: the start of the first window read if none seen
    last_request_at: AwareDatetime | None = None
    # a wake in progress: when its signal came and what it was (activator, metric, api), until
    # the service has a running task behind healthy targets
    wake_started_at: AwareDatetime | None = None
    wake_source: str | None = None
    wake_seconds: tuple[float, ...] = ()  # how long the last wakes took (newest last)

    def expected_wake(self, default: timedelta) -> timedelta:
        """The median of the last wakes, or `default` before there is one."""
        return timedelta(seconds=float(median(self.wake_seconds))) if self.wake_seconds else default


@dataclass(frozen=True)
class RunInfo:
    """A Terraform run recorded before it starts (so a restart finds it), then its id."""

    runner: str
    operation: Operation
    token: str  # idempotency token: a repeated start after a crash finds the same run
    started_at: AwareDatetime
    run_id: str | None = None  # None: the start was recorded but not confirmed
    logs_url: str | None = None


@dataclass(frozen=True)
class RunResult:
    operation: Operation
    succeeded: bool
    finished_at: AwareDatetime
    duration_seconds: float
    detail: str
    run_id: str | None = None


@dataclass(frozen=True)
class PowerRecord:
    """The environment's power state and Terraform runs, across passes and restarts."""

    state: PowerState | None = None
    run: RunInfo | None = None
    last_result: RunResult | None = None
    failures: int = 0
    retry_at: AwareDatetime | None = None
    durations: dict[Operation, tuple[float, ...]] = field(default_factory=dict)
    changed_at: AwareDatetime | None = None

    def estimated_duration(self, operation: Operation) -> timedelta:
        """The median of the last successful runs of `operation`, or the default."""
        past = self.durations.get(operation)
        return timedelta(seconds=float(median(past))) if past else DEFAULT_DURATIONS[operation]

    def has_history(self, operation: Operation) -> bool:
        return bool(self.durations.get(operation))


@dataclass(frozen=True)
class SwitchedRoute:
    """A listener's default action (`rule_arn` None) or a rule switched to the activator: the
    elbv2 `Actions` it had before and the ones written instead, as JSON text."""

    listener_arn: str
    rule_arn: str | None
    original_actions: str
    switched_actions: str


@dataclass(frozen=True)
class RoutesRecord:
    """Where the load balancer sends the service's traffic while it sleeps. Written before the
    first route changes, so a crash halfway is finished (or undone) by the next pass."""

    switched: tuple[SwitchedRoute, ...] = ()
    switched_at: AwareDatetime | None = None
    # the activator's target group they were sent to (kept: the setting may be gone since)
    activator_target_group: str | None = None


@dataclass(frozen=True)
class Suspension:
    """A suspension asked at runtime (`infra-controller suspend`), kept until `resume`."""

    reason: str
    since: AwareDatetime


@dataclass(frozen=True)
class PowerOverride:
    """`infra-controller power ENV on|off`: the power in force instead of the schedule's and
    git's, until it expires, or until a new revision changes the environment's `power`."""

    power: Literal["on", "off"]
    reason: str
    set_at: AwareDatetime
    # `for`, else the schedule's next change when it was set; None: until cleared
    expires_at: AwareDatetime | None
    git_power: Literal["on", "off"]  # the desired state's `power` when it was set


@dataclass(frozen=True)
class Overrides:
    """What operators set at runtime, through the API, on top of the desired state."""

    suspension: Suspension | None = None
    power: PowerOverride | None = None


@dataclass(frozen=True)
class CostRecord:
    """This month's time powered on and awake, and what powering off saved (core.cost)."""

    month: str | None = None  # YYYY-MM
    powered_on_seconds: float = 0.0
    awake_seconds: float = 0.0
    power_savings: float = 0.0  # USD, from `cost.hourly_when_on`
    accounted_at: AwareDatetime | None = None
    idle_savings: float = 0.0  # USD, the service's Fargate tasks while at zero


@dataclass(frozen=True)
class EnvironmentRecord:
    idle: IdleRecord = field(default_factory=IdleRecord)
    power: PowerRecord = field(default_factory=PowerRecord)
    overrides: Overrides = field(default_factory=Overrides)
    routes: RoutesRecord = field(default_factory=RoutesRecord)
    cost: CostRecord = field(default_factory=CostRecord)
    version: int = 0  # 0: never written


class InvalidRecord(ValueError):
    """A stored record that does not match the record types (corrupt or foreign data)."""


_RECORD: TypeAdapter[EnvironmentRecord] = TypeAdapter(EnvironmentRecord)


def record_to_json(record: EnvironmentRecord) -> dict[str, Any]:
    data: dict[str, Any] = _RECORD.dump_python(record, mode="json")
    return data


def record_from_json(data: object) -> EnvironmentRecord:
    try:
        return _RECORD.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(record)"
        raise InvalidRecord(f"{where}: {first['msg']}") from None
