"""The idle policy's decision: a pure function of (desired, observed, now) -> action + reason.

No I/O here: `plan`, the loop and the property tests all call the same `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from controller.desired_state import Environment
from controller.durations import format_duration

IdleAction = Literal["none", "scale_to_zero", "scale_up"]
Datapoints = tuple[tuple[datetime, float], ...]


@dataclass(frozen=True)
class ServiceState:
    """What DescribeServices said about the environment's service."""

    status: str  # ACTIVE, DRAINING, INACTIVE, or MISSING when DescribeServices did not find it
    desired_count: int = 0
    running_count: int = 0
    pending_count: int = 0
    # `app/NAME/ID` values of the ALBs in front of the service, and `targetgroup/NAME/ID` values
    load_balancers: tuple[str, ...] = ()
    target_groups: tuple[str, ...] = ()

    @property
    def exists(self) -> bool:
        return self.status == "ACTIVE"

    @property
    def awake(self) -> bool:
        return self.desired_count > 0


@dataclass(frozen=True)
class Activity:
    """ALB metric datapoints (bucket start, sum) over [window_start, now], one bucket per period.

    While awake only `requests` (RequestCount) is read; while asleep only `rejected`
    (HTTPCode_ELB_503_Count). A metric that was not read is None, never an empty series:
    an empty series means the ALB published nothing, i.e. no requests.
    """

    window_start: datetime
    period: timedelta
    requests: Datapoints | None = None
    rejected: Datapoints | None = None

    def last_request_end(self) -> datetime | None:
        """End of the latest bucket with a request: the latest moment a request may have come."""
        seen = [start for start, value in self.requests or () if value > 0]
        return max(seen) + self.period if seen else None


@dataclass(frozen=True)
class Wakefulness:
    """What the controller has seen of the service's sleep and wake, across passes.

    ECS does not record when desiredCount last changed, so the controller keeps it. A service
    seen awake for the first time counts as just woken: after a controller restart nothing is
    scaled down before `idle.after` has passed (KEDA's initial cooldown lesson).
    """

    awake_since: datetime | None = None
    asleep_since: datetime | None = None

    def observe(self, service: ServiceState, now: datetime) -> Wakefulness:
        if not service.exists:
            return Wakefulness()  # deleted (or never created): a new service starts a new story
        if service.awake:
            return Wakefulness(awake_since=self.awake_since or now, asleep_since=None)
        # first seen asleep: the moment it fell asleep is unknown, so every 503 in the window counts
        return Wakefulness(awake_since=None, asleep_since=self.asleep_since)

    def after(self, decision: IdleDecision, now: datetime) -> Wakefulness:
        if decision.action == "scale_up":
            return replace(self, awake_since=now, asleep_since=None)
        if decision.action == "scale_to_zero":
            return replace(self, awake_since=None, asleep_since=now)
        return self


@dataclass(frozen=True)
class IdleObservation:
    service: ServiceState | None  # None: the read failed (unknown)
    activity: Activity | None  # None: not read, or the read failed (unknown)
    wakefulness: Wakefulness
    wake_requested: bool = False
    error: str | None = None  # why something is unknown
    # the environment's power state when Terraform manages it; the policy waits for RUNNING
    power_state: str | None = None


@dataclass(frozen=True)
class IdleDecision:
    action: IdleAction
    reason: str
    desired_count: int | None = None  # the count `act` sets, for scale actions
    # True when the decision rests on a failed read: the environment's reconcile is an error
    unknown: bool = False

    @property
    def changes_aws(self) -> bool:
        return self.action != "none"


def _none(reason: str, unknown: bool = False) -> IdleDecision:
    return IdleDecision("none", reason, unknown=unknown)


def needs_activity(
    environment: Environment, service: ServiceState
) -> Literal["requests", "rejected", None]:
    """Which ALB metric `decide` will look at, so the observer reads only that one."""
    if environment.idle is None or environment.suspend or environment.power == "off":
        return None
    if not service.exists:
        return None
    if service.awake:
        return "requests"
    return "rejected" if environment.idle.wake == "on-request" else None


def decide(environment: Environment, observed: IdleObservation, now: datetime) -> IdleDecision:
    idle = environment.idle
    if environment.suspend:
        return _none("suspended: observing only")
    if environment.power == "off":
        return _none("power is off: the idle policy does nothing")
    if idle is None or environment.service is None:
        return _none("no idle policy")
    if observed.power_state not in (None, "RUNNING"):
        return _none(f"power state {observed.power_state}: the idle policy waits for RUNNING")
    service = observed.service
    if service is None:
        return _none(
            f"service state unknown ({observed.error or 'read failed'}): doing nothing", True
        )
    if not service.exists:
        return _none(f"service not found (status {service.status})")

    if not service.awake:
        if observed.wake_requested:
            return IdleDecision("scale_up", "wake requested through the API", idle.active_count)
        if idle.wake == "manual":
            return _none("asleep; wakes on request through the API (wake: manual)")
        activity = observed.activity
        if activity is None or activity.rejected is None:
            return _none(
                f"asleep; wake signal unknown ({observed.error or 'not read'}): doing nothing", True
            )
        since = observed.wakefulness.asleep_since
        rejected = sum(
            value
            for start, value in activity.rejected
            if since is None or start + activity.period > since
        )
        if rejected > 0:
            return IdleDecision(
                "scale_up",
                f"{rejected:g} request(s) answered 503 by the load balancer while asleep",
                idle.active_count,
            )
        return _none("asleep; no request since it was scaled to zero")

    if observed.wake_requested:
        return _none("wake requested, and the service is already awake")
    activity = observed.activity
    if activity is None or activity.requests is None:
        return _none(
            f"activity unknown ({observed.error or 'not read'}): unknown is never idle", True
        )
    awake_since = observed.wakefulness.awake_since
    if awake_since is None:
        return _none("time awake unknown: unknown is never idle", True)
    awake_for = now - awake_since
    if awake_for < idle.after:
        return _none(
            f"awake for {format_duration(awake_for)}, less than idle.after "
            f"{format_duration(idle.after)}"
        )
    last_request = activity.last_request_end()
    if last_request is not None:
        quiet_for = now - last_request
        if quiet_for < idle.after:
            return _none(f"last request {format_duration(max(quiet_for, timedelta(0)))} ago")
        return IdleDecision("scale_to_zero", f"no requests for {format_duration(quiet_for)}", 0)
    quiet_for = now - activity.window_start
    if quiet_for < idle.after:
        # the window read is shorter than idle.after: no proof of a long enough silence
        return _none(f"metrics cover only {format_duration(quiet_for)}: not enough to call it idle")
    return IdleDecision(
        "scale_to_zero", f"no requests for at least {format_duration(quiet_for)}", 0
    )
