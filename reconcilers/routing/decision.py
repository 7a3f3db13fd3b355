"""The routing policy's decision: while a service sleeps, the load balancer sends its traffic to
the activator (which wakes it on the first request); once it serves again, back to the service.
Also the end of every wake: a running task behind healthy targets.

Pure: (context, observation, now) -> decision. The routes switched are recorded with what
they were, before they change (`act`), so a crash halfway is finished or undone by a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from controller.core.durations import format_duration
from controller.core.records import EnvironmentRecord, IdleRecord, RoutesRecord, SwitchedRoute
from reconcilers.interface import (
    Condition,
    Decision,
    EnvironmentContext,
    Event,
    ServiceState,
    suspended,
)
from reconcilers.routing.actions import as_text, comparable, forwarded_to, from_text, retarget

RoutingAction = Literal["none", "route_to_activator", "route_to_service"]
RouteKey = tuple[str, str | None]
WAKE_HISTORY = 5  # wakes whose duration sets the wait the activator announces


@dataclass(frozen=True)
class Route:
    """A listener's default action (`rule_arn` None) or one of its rules, as described now."""

    listener_arn: str
    rule_arn: str | None
    actions: tuple[Mapping[str, Any], ...]
    hosts: tuple[str, ...] = ()  # the rule's host-header values

    @property
    def key(self) -> RouteKey:
        return (self.listener_arn, self.rule_arn)


@dataclass(frozen=True)
class RoutingObservation:
    # the routes of the service's load balancers; None: not needed, or unread (see error)
    routes: tuple[Route, ...] | None = None
    healthy_targets: int | None = None  # in the service's target groups; None: not read
    error: str | None = None
    # no other environment's service is behind the same load balancers
    sole_on_balancers: bool = False


@dataclass(frozen=True)
class RouteWrite:
    listener_arn: str
    rule_arn: str | None
    actions: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, kw_only=True)
class RoutingDecision(Decision):
    action: RoutingAction = "none"
    writes: tuple[RouteWrite, ...] = ()


@dataclass(frozen=True)
class RoutingSituation:
    """What the decision rests on, gathered from the context."""

    uses_activator: bool
    service: ServiceState | None
    service_error: str | None
    asleep: bool  # at zero after this pass (the idle policy's change included)
    scaling_up: bool  # the idle policy wakes it in this pass
    power_state: str | None
    routes: RoutesRecord
    activator: str | None


def _none(
    reason: str, unknown: bool = False, relevant: bool = True, routes: RoutesRecord | None = None
) -> tuple[RoutingDecision, RoutesRecord | None]:
    return RoutingDecision(reason=reason, unknown=unknown, relevant=relevant), routes


def decide(
    situation: RoutingSituation, observed: RoutingObservation
) -> tuple[RoutingDecision, RoutesRecord | None]:
    """The decision, and the routes record to keep (None: unchanged)."""
    s = situation
    switched = s.routes.switched
    if not s.uses_activator and not switched:
        return _none("no activator for this environment", relevant=False)
    if s.service is None:
        return _none(f"service state unknown ({s.service_error or 'read failed'})", True)
    if not s.service.exists:
        if switched:  # its load balancer went with it; a new one starts from Terraform's rules
            return _none("service gone: its switched routes are forgotten", routes=RoutesRecord())
        return _none("service not found")
    own = set(s.service.target_group_arns)
    if not own:
        return _none("the service has no target group: traffic cannot be switched")
    if observed.routes is None:
        return _none(f"routes unknown ({observed.error or 'not read'}): doing nothing", True)
    current = {route.key: route for route in observed.routes}
    sent_to = s.routes.activator_target_group or s.activator
    kept = tuple(
        entry
        for entry in switched
        if (entry.listener_arn, entry.rule_arn) in current
        and sent_to in forwarded_to(current[(entry.listener_arn, entry.rule_arn)].actions)
    )
    kept += _strays(observed, {(e.listener_arn, e.rule_arn) for e in kept}, sent_to, own)
    cleaned = RoutesRecord(kept, s.routes.switched_at, sent_to) if kept else RoutesRecord()
    if s.uses_activator and s.asleep:
        if s.power_state not in (None, "RUNNING"):
            return _none(f"power state {s.power_state}: routes left as they are", routes=cleaned)
        return _to_activator(s, observed.routes, own, cleaned)
    return _to_service(s, current, own, cleaned, observed.healthy_targets)


def _strays(
    observed: RoutingObservation, recorded: set[RouteKey], sent_to: str | None, own: set[str]
) -> tuple[SwitchedRoute, ...]:
    """Routes at the activator that no record explains (a lost or reset state store), taken
    over as this service's: only when its load balancers serve no other environment, where
    they can be no one else's."""
    if sent_to is None or not observed.sole_on_balancers:
        return ()
    return tuple(
        SwitchedRoute(
            r.listener_arn,
            r.rule_arn,
            as_text(retarget(r.actions, {sent_to}, sorted(own)[0])),
            as_text(r.actions),
        )
        for r in observed.routes or ()
        if r.key not in recorded and sent_to in forwarded_to(r.actions)
    )


def _to_activator(
    s: RoutingSituation, routes: tuple[Route, ...], own: set[str], record: RoutesRecord
) -> tuple[RoutingDecision, RoutesRecord | None]:
    assert s.activator is not None
    allowed = own | {s.activator}
    to_switch = [r for r in routes if forwarded_to(r.actions) & own]
    shared = [r for r in to_switch if not forwarded_to(r.actions) <= allowed]
    to_switch = [r for r in to_switch if r not in shared]
    note = f"; {len(shared)} route(s) shared with other target groups left alone" if shared else ""
    if not to_switch:
        if record.switched:
            return _none(f"asleep; its traffic goes to the activator{note}", routes=record)
        return _none(f"asleep; no route forwards to the service{note}", routes=record)
    writes = tuple(
        RouteWrite(r.listener_arn, r.rule_arn, tuple(retarget(r.actions, own, s.activator)))
        for r in to_switch
    )
    entries = tuple(
        SwitchedRoute(r.listener_arn, r.rule_arn, as_text(r.actions), as_text(w.actions))
        for r, w in zip(to_switch, writes, strict=True)
    )
    decision = RoutingDecision(
        action="route_to_activator",
        reason=f"asleep: {len(writes)} route(s) sent to the activator{note}",
        writes=writes,
    )
    return decision, RoutesRecord(record.switched + entries, record.switched_at, s.activator)


def _to_service(
    s: RoutingSituation,
    current: Mapping[RouteKey, Route],
    own: set[str],
    record: RoutesRecord,
    healthy: int | None,
) -> tuple[RoutingDecision, RoutesRecord | None]:
    assert s.service is not None
    if not record.switched:
        return _none("traffic goes to the service", routes=record)
    running = s.service.running_count
    if s.uses_activator and s.scaling_up:
        return _none("waking now; traffic stays at the activator", routes=record)
    if s.uses_activator and (running < 1 or not healthy):
        shown = "unknown" if healthy is None else str(healthy)
        return _none(
            f"waking: {running} running, {shown} healthy target(s); traffic stays at the activator",
            routes=record,
        )
    writes = tuple(
        _restored(current[(e.listener_arn, e.rule_arn)], e, record, own) for e in record.switched
    )
    why = "the service serves again" if s.uses_activator else "the activator is no longer used"
    decision = RoutingDecision(
        action="route_to_service",
        reason=f"{why}: {len(writes)} route(s) sent back to it",
        writes=writes,
    )
    return decision, RoutesRecord()


def _restored(
    route: Route, entry: SwitchedRoute, record: RoutesRecord, own: set[str]
) -> RouteWrite:
    """What was there before, unless the route changed since the switch: then only the
    activator is replaced (by the service's target group), keeping the other change."""
    assert record.activator_target_group is not None
    if comparable(route.actions) == comparable(from_text(entry.switched_actions)):
        actions = from_text(entry.original_actions)
    else:
        actions = retarget(route.actions, {record.activator_target_group}, sorted(own)[0])
    return RouteWrite(route.listener_arn, route.rule_arn, tuple(actions))


def wake_progress(
    idle: IdleRecord, service: ServiceState | None, healthy: int | None, now: datetime
) -> tuple[IdleRecord, tuple[Event, ...]]:
    """A wake ends when the service has a running task behind a healthy target (or a running
    task, for a service without target group)."""
    started = idle.wake_started_at
    if started is None or service is None or not service.exists or not service.awake:
        return idle, ()
    serving = service.running_count >= 1 and (not service.target_group_arns or bool(healthy))
    if not serving:
        return idle, ()
    took = max(now - started, timedelta(0))
    event = Event(
        "wake_completed",
        f"serving {format_duration(took)} after the wake signal ({idle.wake_source})",
        attributes={"source": idle.wake_source, "duration_seconds": took.total_seconds()},
    )
    history = (*idle.wake_seconds, took.total_seconds())[-WAKE_HISTORY:]
    return replace(idle, wake_started_at=None, wake_source=None, wake_seconds=history), (event,)


def needs(context: EnvironmentContext, activator: str | None) -> tuple[bool, bool]:
    """Whether the routes, and the target health, must be read for this environment."""
    service, record = context.facts.service, context.record
    if service is None or not service.exists or not service.target_group_arns:
        return False, False
    routes = uses_activator(context, activator) or bool(record.routes.switched)
    health = service.awake and (
        bool(record.routes.switched) or record.idle.wake_started_at is not None
    )
    return routes, health


def uses_activator(context: EnvironmentContext, activator: str | None) -> bool:
    idle = context.spec.idle
    return (
        activator is not None
        and idle is not None
        and idle.wake == "on-request"
        and context.spec.power == "on"
    )


def decide_in_context(
    context: EnvironmentContext, observed: RoutingObservation, activator: str | None, now: datetime
) -> RoutingDecision:
    facts, record = context.facts, context.record
    service = facts.service
    scaled_to = facts.service_scaled_to
    asleep = scaled_to == 0 or (scaled_to is None and service is not None and not service.awake)
    situation = RoutingSituation(
        uses_activator=uses_activator(context, activator),
        service=service,
        service_error=facts.service_error,
        asleep=asleep,
        scaling_up=bool(scaled_to),
        power_state=facts.power_state if context.spec.terraform is not None else None,
        routes=record.routes,
        activator=activator,
    )
    decision, routes = decide(situation, observed)
    idle, events = wake_progress(record.idle, service, observed.healthy_targets, now)
    if context.spec.suspend:
        would = decision
        decision = RoutingDecision(
            reason=suspended(would), relevant=would.relevant, unknown=would.unknown
        )
        routes = None if would.changes_aws else routes
    kept = replace(record, idle=idle, routes=routes if routes is not None else record.routes)
    recorded = {
        (e.listener_arn, e.rule_arn) for e in (*record.routes.switched, *kept.routes.switched)
    }
    own = set(service.target_group_arns) if service is not None else set()
    hosts = tuple(
        sorted(
            {
                host
                for route in observed.routes or ()
                if route.key in recorded or forwarded_to(route.actions) & own
                for host in route.hosts
            }
        )
    )
    return replace(
        decision,
        record=kept,
        events=events,
        facts=replace(facts, hosts=hosts),
        conditions=_conditions(decision, kept),
        change=_change(decision),
    )


def _change(decision: RoutingDecision) -> dict[str, Any]:
    if not decision.changes_aws:
        return {}
    return {
        "operation": "elasticloadbalancing:ModifyRule/ModifyListener",
        "routes": len(decision.writes),
    }


def _conditions(decision: RoutingDecision, record: EnvironmentRecord) -> tuple[Condition, ...]:
    if not decision.relevant:
        return ()
    at_activator = bool(record.routes.switched)
    reason = "AtActivator" if at_activator else "AtService"
    return (Condition("TrafficAtActivator", at_activator, reason, decision.reason),)
