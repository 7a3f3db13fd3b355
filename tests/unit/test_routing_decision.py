"""The routing policy's pure parts: rewriting elbv2 actions, and each branch of the decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller.core.records import IdleRecord, RoutesRecord, SwitchedRoute
from reconcilers.interface import ServiceState
from reconcilers.routing.actions import as_text, forwarded_to, retarget
from reconcilers.routing.decision import (
    Route,
    RoutingObservation,
    RoutingSituation,
    decide,
    wake_progress,
)

SERVICE, ACTIVATOR, OTHER = "tg/service", "tg/activator", "tg/other"
LISTENER = "listener/1"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def forward(*groups: tuple[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "Type": "forward",
            "ForwardConfig": {
                "TargetGroups": [{"TargetGroupArn": g, "Weight": w} for g, w in groups]
            },
        }
    ]


def simple(group: str) -> list[dict[str, Any]]:
    return [{"Type": "forward", "TargetGroupArn": group}]


def service(
    desired: int = 1, running: int = 1, groups: tuple[str, ...] = (SERVICE,)
) -> ServiceState:
    return ServiceState(
        "ACTIVE", desired_count=desired, running_count=running, target_group_arns=groups
    )


def situation(**overrides: Any) -> RoutingSituation:
    values: dict[str, Any] = {
        "uses_activator": True,
        "service": service(desired=0, running=0),
        "service_error": None,
        "asleep": True,
        "scaling_up": False,
        "power_state": None,
        "routes": RoutesRecord(),
        "activator": ACTIVATOR,
    }
    return RoutingSituation(**(values | overrides))


def observed(*routes: Route, healthy: int | None = None) -> RoutingObservation:
    return RoutingObservation(routes=routes, healthy_targets=healthy)


DEFAULT = Route(LISTENER, None, tuple(simple(SERVICE)))
SWITCHED = Route(LISTENER, None, tuple(simple(ACTIVATOR)))
RECORD = RoutesRecord(
    (SwitchedRoute(LISTENER, None, as_text(simple(SERVICE)), as_text(simple(ACTIVATOR))),),
    NOW,
    ACTIVATOR,
)


def test_retarget_rewrites_simple_and_weighted_forwards_and_merges_weights() -> None:
    assert retarget(simple(SERVICE), {SERVICE}, ACTIVATOR) == simple(ACTIVATOR)
    both = forward((SERVICE, 3), (ACTIVATOR, 1), (OTHER, 2))
    merged = retarget(both, {SERVICE}, ACTIVATOR)
    assert forwarded_to(merged) == {ACTIVATOR, OTHER}
    weights = {g["TargetGroupArn"]: g["Weight"] for g in merged[0]["ForwardConfig"]["TargetGroups"]}
    assert weights == {ACTIVATOR: 4, OTHER: 2}
    assert both[0]["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"] == SERVICE  # a copy


def test_an_oidc_action_keeps_the_listener_s_secret() -> None:
    actions = [{"Type": "authenticate-oidc", "AuthenticateOidcConfig": {"ClientId": "x"}}]
    assert retarget(actions, {SERVICE}, ACTIVATOR)[0]["AuthenticateOidcConfig"] == {
        "ClientId": "x",
        "UseExistingClientSecret": True,
    }


def test_an_asleep_service_s_routes_go_to_the_activator_and_are_recorded() -> None:
    shared = Route(LISTENER, "rule/shared", tuple(forward((SERVICE, 1), (OTHER, 1))))
    decision, record = decide(situation(), observed(DEFAULT, shared))
    assert decision.action == "route_to_activator"
    assert [w.actions for w in decision.writes] == [tuple(simple(ACTIVATOR))]
    assert record is not None and record.activator_target_group == ACTIVATOR
    assert [e.rule_arn for e in record.switched] == [None]
    assert "1 route(s) shared with other target groups left alone" in decision.reason


def test_nothing_is_switched_while_the_power_state_is_not_running() -> None:
    decision, _ = decide(situation(power_state="STOPPING"), observed(DEFAULT))
    assert (decision.action, decision.reason) == (
        "none",
        "power state STOPPING: routes left as they are",
    )


def test_unknown_routes_or_service_are_never_a_reason_to_act() -> None:
    decision, _ = decide(situation(), RoutingObservation(error="elbv2 DescribeRules: throttled"))
    assert (decision.action, decision.unknown) == ("none", True)
    decision, _ = decide(situation(service=None, service_error="timeout"), observed(DEFAULT))
    assert (decision.action, decision.unknown) == ("none", True)


def test_routes_stay_at_the_activator_until_a_task_runs_behind_a_healthy_target() -> None:
    awake = situation(asleep=False, service=service(), routes=RECORD)
    decision, _ = decide(awake, observed(SWITCHED, healthy=0))
    assert (
        decision.reason == "waking: 1 running, 0 healthy target(s); traffic stays at the activator"
    )
    decision, _ = decide(
        situation(asleep=False, scaling_up=True, routes=RECORD), observed(SWITCHED)
    )
    assert decision.reason == "waking now; traffic stays at the activator"
    decision, record = decide(awake, observed(SWITCHED, healthy=1))
    assert decision.action == "route_to_service"
    assert [w.actions for w in decision.writes] == [tuple(simple(SERVICE))]
    assert record == RoutesRecord()


def test_a_route_changed_since_the_switch_keeps_the_change_and_loses_the_activator() -> None:
    changed = Route(LISTENER, None, tuple(forward((ACTIVATOR, 1), (OTHER, 1))))
    awake = situation(asleep=False, service=service(), routes=RECORD)
    decision, _ = decide(awake, observed(changed, healthy=1))
    assert forwarded_to(decision.writes[0].actions) == {SERVICE, OTHER}


def test_switched_routes_go_back_at_once_when_the_activator_is_no_longer_used() -> None:
    off = situation(uses_activator=False, activator=None, asleep=True, routes=RECORD)
    decision, record = decide(off, observed(SWITCHED, healthy=0))
    assert decision.action == "route_to_service"
    assert record == RoutesRecord()


def test_a_recorded_route_no_longer_at_the_activator_is_forgotten() -> None:
    decision, record = decide(
        situation(asleep=False, service=service(), routes=RECORD), observed(DEFAULT)
    )
    assert (decision.action, record) == ("none", RoutesRecord())


def test_a_service_gone_forgets_its_switched_routes() -> None:
    gone = situation(service=ServiceState("MISSING"), routes=RECORD)
    decision, record = decide(gone, RoutingObservation())
    assert (decision.action, record) == ("none", RoutesRecord())


def test_without_the_activator_and_nothing_switched_the_policy_does_not_apply() -> None:
    decision, _ = decide(situation(uses_activator=False), RoutingObservation())
    assert decision.relevant is False


def test_a_wake_ends_with_a_running_task_behind_a_healthy_target() -> None:
    waking = IdleRecord(wake_started_at=NOW, wake_source="activator")
    later = NOW + timedelta(seconds=42)
    assert wake_progress(waking, service(running=0), None, later) == (waking, ())
    assert wake_progress(waking, service(), 0, later) == (waking, ())
    record, (event,) = wake_progress(waking, service(), 1, later)
    assert record.wake_started_at is None
    assert event.attributes == {"source": "activator", "duration_seconds": 42.0}
    # without a target group, a running task is enough
    _, events = wake_progress(waking, service(groups=()), None, later)
    assert len(events) == 1


def test_an_unrecorded_route_at_the_activator_comes_back_only_from_an_unshared_alb() -> None:
    awake = situation(asleep=False, service=service())
    shared = RoutingObservation(routes=(SWITCHED,), healthy_targets=1, sole_on_balancers=False)
    decision, _ = decide(awake, shared)
    assert (decision.action, decision.reason) == ("none", "traffic goes to the service")
    alone = RoutingObservation(routes=(SWITCHED,), healthy_targets=1, sole_on_balancers=True)
    decision, record = decide(awake, alone)
    assert decision.action == "route_to_service"
    assert [w.actions for w in decision.writes] == [tuple(simple(SERVICE))]
    assert record == RoutesRecord()
