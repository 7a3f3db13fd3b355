"""The idle policy's decision: a pure function of (desired, observed, now) -> action + reason.

No I/O here: `plan`, the engine and the property tests all call the same functions. `decide`
is the policy itself; `decide_in_context` adds what the engine keeps from it (the idle record,
the facts for the status, the conditions, whether a pending wake is satisfied).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from controller.core.desired_state import Environment
from controller.core.durations import format_duration
from controller.core.records import IdleRecord, PowerState
from reconcilers.interface import (
    AttributeValue,
    Condition,
    Decision,
    EnvironmentContext,
    ServiceState,
    idle_window_closes_by,
    suspended,
)

IdleAction = Literal["none", "scale_to_zero", "scale_up"]
# the activator (a request reached it), metric (the ALB's 503s), api (`wake`)
WakeSource = Literal["activator", "metric", "api"]
Datapoints = tuple[tuple[datetime, float], ...]


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
class ActivityReading:
    """The idle reconciler's own observation: the ALB metric its decision needs."""

    activity: Activity | None = None  # None: not needed, or the read failed (see error)
    error: str | None = None
    # not read in this pass: the service cannot be idle before then (its last request, or its
    # wake, is less than idle.after ago), so the metrics are read again only from then on
    not_idle_before: datetime | None = None


@dataclass(frozen=True)
class IdleObservation:
    service: ServiceState | None  # None: the read failed (unknown)
    activity: Activity | None  # None: not read, or the read failed (unknown)
    wakefulness: IdleRecord
    wake_requested: bool = False
    error: str | None = None  # why something is unknown
    # the environment's power state when Terraform manages it; the policy waits for RUNNING
    power_state: PowerState | None = None
    # its load balancer routes go to the activator (the routing policy's record)
    traffic_at_activator: bool = False
    not_idle_before: datetime | None = None  # the metrics were not read: see ActivityReading


@dataclass(frozen=True, kw_only=True)
class IdleDecision(Decision):
    action: IdleAction = "none"
    desired_count: int | None = None  # the count `act` sets, for scale actions
    wake_source: WakeSource | None = None  # what asked for a scale_up


def _none(reason: str, unknown: bool = False, relevant: bool = True) -> IdleDecision:
    return IdleDecision(reason=reason, unknown=unknown, relevant=relevant)


def observe_wakefulness(record: IdleRecord, service: ServiceState, now: datetime) -> IdleRecord:
    """A service seen awake for the first time counts as just woken: after a controller restart
    nothing is scaled down before `idle.after` has passed (KEDA's initial cooldown lesson)."""
    if not service.exists:
        return IdleRecord()  # deleted (or never created): a new service starts a new story
    if service.awake:
        return replace(record, awake_since=record.awake_since or now, asleep_since=None)
    # first seen asleep: the moment it fell asleep is unknown, so every 503 in the window counts
    return replace(record, awake_since=None)


def after_scaling(
    record: IdleRecord, action: str, now: datetime, source: str | None = None
) -> IdleRecord:
    if action == "scale_up":  # a wake under way since its first signal
        return replace(
            record,
            awake_since=now,
            asleep_since=None,
            wake_started_at=record.wake_started_at or now,
            wake_source=record.wake_source or source,
        )
    if action == "scale_to_zero":
        return replace(
            record, awake_since=None, asleep_since=now, wake_started_at=None, wake_source=None
        )
    return record


def track_last_request(record: IdleRecord, activity: Activity | None) -> IdleRecord:
    """The latest moment a request may have come; the window's start when none was seen."""
    if activity is None or activity.requests is None:
        return record
    candidates = [t for t in (record.last_request_at, activity.last_request_end()) if t]
    return replace(record, last_request_at=max(candidates) if candidates else activity.window_start)


def wake_refusal(environment: Environment) -> str | None:
    """Why a wake asked through the API cannot apply to `environment`; None when it can."""
    if environment.service is None or environment.idle is None:
        return "the environment has no service with an idle policy"
    if environment.power == "off":
        return "the environment's power is off"
    if environment.suspend:
        return "the environment is suspended"
    return None


def needs_activity(
    environment: Environment, service: ServiceState
) -> Literal["requests", "rejected", None]:
    """Which ALB metric `decide` will look at, so the observer reads only that one."""
    # a suspended environment still reads it: the status says what it would do
    if environment.idle is None or environment.power == "off":
        return None
    if not service.exists:
        return None
    if service.awake:
        return "requests"
    return "rejected" if environment.idle.wake == "on-request" else None


def what_to_read(
    context: EnvironmentContext, service: ServiceState, now: datetime
) -> Literal["requests", "rejected"] | ActivityReading:
    """The metric to read in this pass, or the reading that stands for it when none is needed:
    an awake service is read only once its idle window could close (its last request and its
    wake both idle.after ago), and while its wake is under way or a keep_awake period holds,
    not at all; an asleep one behind the activator, whose requests reach the activator, never."""
    kind = needs_activity(context.spec, service)
    idle, record = context.spec.idle, context.record
    if kind is None or idle is None:
        return ActivityReading()
    if record.routes.switched:  # asleep: the activator wakes it; awake: not idle (waking)
        return ActivityReading()
    if kind == "rejected":
        return kind
    keep = idle.keep_awake
    waking = context.woken_outside_pass is not None or record.idle.wake_started_at is not None
    if waking or (keep is not None and keep.is_active(now)):
        return ActivityReading()
    closes_by = idle_window_closes_by(context, now)  # never read: now, for the last request
    if closes_by is not None and now < closes_by:
        return ActivityReading(not_idle_before=closes_by)
    return kind


def decide(environment: Environment, observed: IdleObservation, now: datetime) -> IdleDecision:
    idle = environment.idle
    if environment.suspend:
        return _none(
            suspended(decide(environment.model_copy(update={"suspend": False}), observed, now))
        )
    if environment.power == "off":
        return _none("power is off: the idle policy does nothing", relevant=False)
    if idle is None or environment.service is None:
        return _none("no idle policy", relevant=False)
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
        return _decide_asleep(environment, observed, service)
    return _decide_awake(environment, observed, now)


def _decide_asleep(
    environment: Environment, observed: IdleObservation, service: ServiceState
) -> IdleDecision:
    idle = environment.idle
    assert idle is not None
    if observed.wake_requested:
        return _scale_up("wake requested through the API", idle.active_count, "api")
    if idle.wake == "manual":
        return _none("asleep; wakes on request through the API (wake: manual)")
    activity = observed.activity
    if activity is None and observed.traffic_at_activator:
        return _none("asleep; its requests reach the activator, which wakes it")
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
        return _scale_up(
            f"{rejected:g} request(s) answered 503 by the load balancer while asleep",
            idle.active_count,
            "metric",
        )
    return _none("asleep; no request since it was scaled to zero")


def _decide_awake(
    environment: Environment, observed: IdleObservation, now: datetime
) -> IdleDecision:
    idle = environment.idle
    assert idle is not None
    if observed.wake_requested:
        return _none("wake requested, and the service is already awake")
    if observed.wakefulness.wake_started_at is not None or observed.traffic_at_activator:
        # its visitors reach the activator, not the service: the metrics cannot show them
        return _none("waking: its traffic is not back on the service yet, so not idle")
    keep = idle.keep_awake
    if keep is not None and keep.is_active(now):
        until = keep.next_change(now)
        ends = f" until {keep.format_instant(until, since=now)}" if until else ""
        return _none(f"keep_awake: {keep.describe_period_at(now)}{ends}")
    activity = observed.activity
    if activity is None or activity.requests is None:
        if observed.not_idle_before is not None and now < observed.not_idle_before:
            return _not_idle_yet(idle.after, observed.wakefulness, now)
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
        return _scale_to_zero(f"no requests for {format_duration(quiet_for)}")
    quiet_for = now - activity.window_start
    if quiet_for < idle.after:
        # the window read is shorter than idle.after: no proof of a long enough silence
        return _none(f"metrics cover only {format_duration(quiet_for)}: not enough to call it idle")
    return _scale_to_zero(f"no requests for at least {format_duration(quiet_for)}")


def _not_idle_yet(after: timedelta, wakefulness: IdleRecord, now: datetime) -> IdleDecision:
    """The metrics were not read: the service cannot be idle yet. Said as a read would say it
    (a decision line is logged when its words change, not when a read was skipped)."""
    awake_since, last_request = wakefulness.awake_since, wakefulness.last_request_at
    if awake_since is not None and now - awake_since < after:
        return _none(
            f"awake for {format_duration(now - awake_since)}, less than idle.after "
            f"{format_duration(after)}"
        )
    quiet_for = max(now - last_request, timedelta(0)) if last_request else timedelta(0)
    return _none(f"last request {format_duration(quiet_for)} ago")


def _scale_up(reason: str, count: int, source: WakeSource) -> IdleDecision:
    return IdleDecision(action="scale_up", reason=reason, desired_count=count, wake_source=source)


def _scale_to_zero(reason: str) -> IdleDecision:
    return IdleDecision(action="scale_to_zero", reason=reason, desired_count=0)


def decide_in_context(
    context: EnvironmentContext, reading: ActivityReading, now: datetime
) -> IdleDecision:
    """The policy applied to one environment of a pass, with what the engine keeps from it."""
    spec, facts = context.spec, context.facts
    service = facts.service
    record = context.record.idle
    if service is not None:
        record = observe_wakefulness(record, service, now)
    record = track_last_request(record, reading.activity)
    woken = context.woken_outside_pass
    if woken is not None and record.wake_started_at is None:
        # woken by the activator since the last pass: the wake started at its first request,
        # a request the ALB metrics never show
        latest = max(t for t in (record.last_request_at, woken) if t is not None)
        record = replace(
            record, wake_started_at=woken, wake_source="activator", last_request_at=latest
        )
    observation = IdleObservation(
        service=service,
        activity=reading.activity,
        wakefulness=record,
        wake_requested=context.wake_requested,
        error=reading.error or facts.service_error,
        power_state=facts.power_state if spec.terraform is not None else None,
        traffic_at_activator=bool(context.record.routes.switched),
        not_idle_before=reading.not_idle_before,
    )
    decision = decide(spec, observation, now)
    return replace(
        decision,
        change=_change(spec, decision),
        record=replace(context.record, idle=record),
        facts=replace(
            facts,
            last_request_at=record.last_request_at,
            service_scaled_to=decision.desired_count if decision.changes_aws else None,
        ),
        conditions=_conditions(decision, service),
        satisfies_wake=context.wake_requested
        and (decision.action == "scale_up" or (service is not None and service.awake)),
    )


def activator_wake(environment: Environment, reason: str) -> IdleDecision | None:
    """The scale-up a request at the activator asks for, at once and outside a pass; None when
    the environment is not one to wake (the same refusals as a wake through the API)."""
    idle = environment.idle
    if wake_refusal(environment) is not None or idle is None or idle.wake != "on-request":
        return None
    decision = _scale_up(reason, idle.active_count, "activator")
    return replace(decision, change=_change(environment, decision))


def _change(spec: Environment, decision: IdleDecision) -> dict[str, AttributeValue]:
    """The fields of the `aws change` line logged before the change is made."""
    if not decision.changes_aws or spec.service is None:
        return {}
    return {
        "operation": "ecs:UpdateService",
        "cluster": spec.service.cluster,
        "service": spec.service.name,
        "desired_count": decision.desired_count,
    }


def _conditions(decision: IdleDecision, service: ServiceState | None) -> tuple[Condition, ...]:
    if not decision.relevant:
        return ()
    if service is None or not service.exists:
        return (Condition("ServiceAwake", False, "Unknown", decision.reason),)
    reason = "Awake" if service.awake else "ScaledToZero"
    return (Condition("ServiceAwake", service.awake, reason, decision.reason),)
