"""The routing policy against the emulator: a sleeping service's load balancer routes go to the
activator's target group in the pass that scales it to zero, come back once it serves again,
and a crash between recording and switching is finished by the next pass."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from controller.core.aws import AwsClients
from controller.core.state_store import FileStateStore
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from tests.alb import Alb, activator_settings, forwards
from tests.conftest import REGION, Harness, MakeController, desired_count
from tests.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, wake: str = "on-request") -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        f"    idle: {{after: 5m, active_count: 1, wake: {wake}}}\n"
    )


async def sleep_it(h: Harness) -> None:
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))


async def test_scaling_to_zero_sends_the_service_s_routes_to_the_activator_in_the_same_pass(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await sleep_it(h)
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert report.decision("demo", "routing").action == "route_to_activator"
    assert await desired_count(seed_aws, stack) == 0
    assert await forwards(seed_aws, alb) == {
        "default": {"activator"},
        "host": {"activator"},
        "shared": {"service", "other"},  # shared with another group: left alone
    }
    record = (await FileStateStore(str(h.state_path)).load()).records["demo"]
    originals = {e.rule_arn: json.loads(e.original_actions) for e in record.routes.switched}
    assert set(originals) == {None, alb.host_rule}
    assert originals[None][0]["TargetGroupArn"] == alb.service_group
    assert (
        h.metric("infra_controller_actions_total", environment="demo", action="route_to_activator")
        == 1
    )
    # the rule's host names are the activator's to answer for this environment
    assert h.controller.snapshot().environments["demo"].facts.hosts == ("app.example.com",)
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "none"
    assert report.decision("demo", "routing").reason == (
        "asleep; its traffic goes to the activator; 1 route(s) shared with other target groups "
        "left alone"
    )


async def test_routes_come_back_once_a_task_runs_behind_a_healthy_target(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await sleep_it(h)
    await h.controller.reconcile_once()
    assert h.controller.request_wake("demo") is None
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_up"
    assert report.decision("demo", "routing").reason == (
        "waking now; traffic stays at the activator"
    )
    h.clock.advance(timedelta(seconds=20))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").reason == (
        "waking: 1 running, 0 healthy target(s); traffic stays at the activator"
    )
    assert (await forwards(seed_aws, alb))["default"] == {"activator"}
    # the task registers with its target group, as ECS does
    await seed_aws.call(
        "elbv2",
        "RegisterTargets",
        REGION,
        TargetGroupArn=alb.service_group,
        Targets=[{"Id": "10.0.1.10", "Port": 80}],
    )
    h.clock.advance(timedelta(seconds=20))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_service"
    assert await forwards(seed_aws, alb) == {
        "default": {"service"},
        "host": {"service"},
        "shared": {"service", "other"},
    }
    record = (await FileStateStore(str(h.state_path)).load()).records["demo"]
    assert record.routes.switched == ()
    assert record.idle.wake_started_at is None
    assert h.metric("infra_controller_wakes_total", environment="demo", source="api") == 1
    assert h.metric("infra_controller_wake_duration_seconds_count", environment="demo") == 1
    assert h.metric("infra_controller_wake_duration_seconds_sum", environment="demo") == 40


async def test_a_crash_between_recording_and_switching_is_finished_by_the_next_pass(
    make_controller: MakeController,
    seed_aws: AwsClients,
    stack: DemoStack,
    alb: Alb,
    proxy: FaultProxy,
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await sleep_it(h)
    proxy.set(Fault("reset", "ModifyListener"))
    report = await h.controller.reconcile_once()
    assert report.results["demo"] == "error"
    record = (await FileStateStore(str(h.state_path)).load()).records["demo"]
    assert len(record.routes.switched) == 2  # recorded before the first change
    assert (await forwards(seed_aws, alb))["default"] == {"service"}
    proxy.clear()
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once(request=None)
    await h.controller.reconcile_once()
    assert await forwards(seed_aws, alb) == {
        "default": {"activator"},
        "host": {"activator"},
        "shared": {"service", "other"},
    }


async def test_routes_left_at_the_activator_are_sent_back_when_it_is_turned_off(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await sleep_it(h)
    await h.controller.reconcile_once()
    assert (await forwards(seed_aws, alb))["host"] == {"activator"}
    # the operator turns the activator off: the same state file, no activator settings
    restarted = make_controller(desired(stack, wake="manual"))
    report = await restarted.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_service"
    assert (await forwards(seed_aws, alb))["default"] == {"service"}


async def test_on_a_shared_alb_only_the_sleeping_service_s_route_is_switched(
    make_controller: MakeController, seed_aws: AwsClients
) -> None:
    first, second = await create_demo_stack(seed_aws, REGION, name="shared", services=2)
    groups = await seed_aws.call(
        "elbv2", "DescribeTargetGroups", REGION, Names=["shared-tg-0", "shared-tg-1"]
    )
    by_name = {g["TargetGroupName"]: g for g in groups["TargetGroups"]}
    activator = (
        await seed_aws.call(
            "elbv2",
            "CreateTargetGroup",
            REGION,
            Name="shared-activator",
            Protocol="HTTP",
            Port=8081,
            VpcId=by_name["shared-tg-0"]["VpcId"],
            TargetType="ip",
        )
    )["TargetGroups"][0]["TargetGroupArn"]
    body = "version: 1\nenvironments:\n"
    for name, stack, after in (("one", first, "5m"), ("two", second, "1h")):
        body += (
            f"  {name}:\n    power: on\n"
            f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
            f"    idle: {{after: {after}, wake: on-request}}\n"
        )
    h = make_controller(body, activator_addr="127.0.0.1:0", activator_target_group=activator)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.decision("one", "routing").action == "route_to_activator"
    assert report.decision("two", "routing").action == "none"
    lbs = await seed_aws.call("elbv2", "DescribeLoadBalancers", REGION, Names=["shared-alb"])
    listener = (
        await seed_aws.call(
            "elbv2",
            "DescribeListeners",
            REGION,
            LoadBalancerArn=lbs["LoadBalancers"][0]["LoadBalancerArn"],
        )
    )["Listeners"][0]
    rules = (
        await seed_aws.call("elbv2", "DescribeRules", REGION, ListenerArn=listener["ListenerArn"])
    )["Rules"]
    # the default action was the first service's; the path rule, the second's
    assert listener["DefaultActions"][0]["TargetGroupArn"] == activator
    (second_rule,) = [r for r in rules if not r["IsDefault"]]
    assert second_rule["Actions"][0]["TargetGroupArn"] == by_name["shared-tg-1"]["TargetGroupArn"]


async def test_routes_at_the_activator_come_back_even_after_the_state_store_is_lost(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await sleep_it(h)
    await h.controller.reconcile_once()
    assert (await forwards(seed_aws, alb))["host"] == {"activator"}
    h.state_path.unlink()  # what recorded the switch is gone
    report = await h.controller.reconcile_once()
    # the ALB serves no other environment: the routes at the activator can only be this one's
    assert report.decision("demo", "routing").reason.startswith("asleep; its traffic goes to")
    assert h.controller.request_wake("demo") is None
    await h.controller.reconcile_once()
    await seed_aws.call(
        "elbv2",
        "RegisterTargets",
        REGION,
        TargetGroupArn=alb.service_group,
        Targets=[{"Id": "10.0.1.10", "Port": 80}],
    )
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_service"
    assert await forwards(seed_aws, alb) == {
        "default": {"service"},
        "host": {"service"},
        "shared": {"service", "other"},
    }
