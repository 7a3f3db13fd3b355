"""What the engine and the policies agree on: the per-environment context, the facts shared
through it, decisions, outcomes, conditions and events, and the two roles a module can play.

An *observer* gathers facts every policy may rely on (the ECS service), batched over all
environments. A *reconciler* is one policy: a batched `observe`, a pure `decide`, an idempotent
`act`. The engine runs the observers, then the reconcilers of each environment in their declared
order; a decision may publish facts (the power state) to the reconcilers that follow. The engine
never looks inside an observation or a policy's own decision fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord, PowerState

Severity = Literal["info", "warning", "error"]
AttributeValue = str | int | float | bool | None


@dataclass(frozen=True)
class ServiceState:
    """What DescribeServices (and the service's target groups) said about the ECS service."""

    status: str  # ACTIVE, DRAINING, INACTIVE, or MISSING when DescribeServices did not find it
    desired_count: int = 0
    running_count: int = 0
    pending_count: int = 0
    # `app/NAME/ID` values of the ALBs in front of the service, and `targetgroup/NAME/ID` values
    load_balancers: tuple[str, ...] = ()
    target_groups: tuple[str, ...] = ()
    # the same, as full ARNs (what the elbv2 API takes)
    load_balancer_arns: tuple[str, ...] = ()
    target_group_arns: tuple[str, ...] = ()
    task_definition: str | None = None  # the ARN, revision included

    @property
    def exists(self) -> bool:
        return self.status == "ACTIVE"

    @property
    def awake(self) -> bool:
        return self.desired_count > 0


@dataclass(frozen=True)
class EnvironmentFacts:
    """What is known of an environment in this pass, for every policy and for the reports."""

    # None with `service_error` set: the read failed (unknown); None without: no service declared
    service: ServiceState | None = None
    service_error: str | None = None
    # the service is known, but not the load balancers in front of it (so not its traffic)
    load_balancer_error: str | None = None
    endpoint: str | None = None  # http://DNS of the service's load balancer, when known
    power_state: PowerState | None = None  # as decided in this pass
    last_request_at: datetime | None = None
    # the desiredCount the idle policy sets in this pass (None: no change)
    service_scaled_to: int | None = None
    # host names the load balancer's rules route to the service (their host-header values)
    hosts: tuple[str, ...] = ()
    # what the service's tasks cost per hour when awake (the idle lever's savings), when known
    hourly_when_awake: float | None = None


@dataclass(frozen=True)
class EnvironmentContext:
    """One environment as a reconciler sees it in one pass."""

    name: str
    spec: Environment
    region: str
    record: EnvironmentRecord  # the persisted memory, as updated by the reconcilers before
    facts: EnvironmentFacts = field(default_factory=EnvironmentFacts)
    wake_requested: bool = False  # a wake asked through the API, not yet satisfied
    retry_now: bool = False  # `POST /reconcile`: failed runs are retried without their backoff
    dry_run: bool = False  # decide only: nothing may start, not even a resumed run
    # the first request of a wake the activator made since the last pass (it scales up at once)
    woken_outside_pass: datetime | None = None
    # where the power in force comes from when it is not the desired state's `power` field
    # (an override, the schedule): said in the power decision's reason
    power_why: str | None = None

    def after(self, effects: Effects) -> EnvironmentContext:
        record, facts = effects.record, effects.facts
        if (record is None or record is self.record) and (facts is None or facts is self.facts):
            return self  # nothing new (most decisions of most passes): no copy
        return replace(
            self,
            record=record if record is not None else self.record,
            facts=facts if facts is not None else self.facts,
        )


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition shown in `/status`."""

    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    """A transition worth telling someone about (the engine stamps time, revision, pass id)."""

    kind: str  # e.g. power_state_changed, run_started, run_succeeded, scaled_to_zero
    reason: str
    from_state: str | None = None
    to_state: str | None = None
    severity: Severity = "info"
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Effects:
    """What a decision or an action changes in the context: the record to keep, the facts to
    publish to the reconcilers that follow, the events it produced. None: unchanged."""

    record: EnvironmentRecord | None = None
    facts: EnvironmentFacts | None = None
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Decision(Effects):
    action: str = "none"  # an `infra_controller_actions_total` action, or none
    reason: str  # for humans: `no requests for 5m12s`
    unknown: bool = False  # rests on a failed read: nothing is done, the reconcile is an error
    conditions: tuple[Condition, ...] = ()
    # the environment is this policy's business right now (a run in flight, an error): its
    # reason is the environment's; otherwise the first acting, then the last relevant one speaks
    holds: bool = False
    relevant: bool = True  # False: the policy does not apply to this environment
    # fields of the `aws change` line logged before `act` makes the change
    change: Mapping[str, AttributeValue] = field(default_factory=dict)
    satisfies_wake: bool = False  # a pending wake is done (the service was seen awake or woken)

    @property
    def changes_aws(self) -> bool:
        return self.action != "none"


def idle_window_closes_by(context: EnvironmentContext, now: datetime) -> datetime | None:
    """When the idle policy may next scale the service to zero (its last request and its
    wake both `idle.after` ago); None without an idle policy, `now` when never read. Whatever
    such a decision rests on (the metrics, the load balancer behind them) must be read fresh
    from then on."""
    idle, record = context.spec.idle, context.record
    if idle is None:
        return None
    last_request = record.idle.last_request_at
    if last_request is None:
        return now
    return max(record.idle.awake_since or now, last_request) + idle.after


def suspended(would: Decision) -> str:
    """The reason a suspended environment reports: what the policy would have done, and why."""
    if would.changes_aws:
        return f"suspended: would {would.action} ({would.reason})"
    return f"suspended: observing only ({would.reason})"


@dataclass(frozen=True, kw_only=True)
class ActOutcome(Effects):
    performed: bool = True  # the change was made (False: refused, e.g. a run that cannot start)
    last_action: Mapping[str, AttributeValue] | None = None


@dataclass(frozen=True)
class Unobserved:
    """The observation of an environment failed as a whole (an exception, a timeout)."""

    reason: str


ObservationT = TypeVar("ObservationT")
DecisionT = TypeVar("DecisionT", bound=Decision)


class RecordWriter(Protocol):
    """The engine's single write path to the state store (optimistic versioning): for what
    must be recorded before a change is made, not after."""

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Write if nobody wrote since `record.version`; raises StoreConflict otherwise."""
        ...


class Observer(Protocol):
    """Gathers facts for all environments at once; returns the updated facts by name."""

    name: str

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, EnvironmentFacts]: ...

    def unobserved(self, context: EnvironmentContext, reason: str) -> EnvironmentFacts:
        """The facts of an environment whose observation failed as a whole: unknown."""
        ...


class Reconciler(Protocol[ObservationT, DecisionT]):
    name: str  # the `reconciler` label of the metrics

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, ObservationT]:
        """Batched reads for every environment; one missing from the answer is unobserved."""
        ...

    def decide(
        self, context: EnvironmentContext, observation: ObservationT | Unobserved, now: datetime
    ) -> DecisionT:
        """Pure: the same context, observation and time always give the same decision."""
        ...

    async def act(
        self, context: EnvironmentContext, decision: DecisionT, now: datetime
    ) -> ActOutcome:
        """Make the decided change; doing it twice must be harmless."""
        ...

    async def close(self, grace_seconds: float) -> None:
        """On shutdown: let work in flight stop within `grace_seconds`."""
        ...
