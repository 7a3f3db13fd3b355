"""A target group's load balancer is read when its ARN is first seen, then kept: a pass does
not read it again, a new ARN is read at once, a target group not behind a load balancer yet is
read again every pass, a kept one is read again after a while (it may have been moved), and
at once for a service that may be scaled to zero in the pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.core.aws import AwsClients, arn_resource
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import REGION, Harness, MakeController

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, after: str = "5m") -> str:
    return f"""
    version: 1
    environments:
      demo:
        power: on
        service: {{cluster: {stack.cluster}, name: {stack.service}}}
        idle: {{after: {after}}}
    """


async def new_target_group(aws: AwsClients, name: str, priority: int | None) -> str:
    """A target group in the demo's VPC; behind the demo ALB (a rule) unless `priority` is
    None."""
    demo = (await aws.call("elbv2", "DescribeTargetGroups", REGION, Names=["demo-tg-0"]))[
        "TargetGroups"
    ][0]
    group = (
        await aws.call(
            "elbv2",
            "CreateTargetGroup",
            REGION,
            Name=name,
            Protocol="HTTP",
            Port=80,
            VpcId=demo["VpcId"],
            TargetType="ip",
        )
    )["TargetGroups"][0]["TargetGroupArn"]
    if priority is not None:
        await attach(aws, group, demo["LoadBalancerArns"][0], priority)
    return str(group)


async def attach(aws: AwsClients, group: str, balancer: str, priority: int) -> None:
    listener = (await aws.call("elbv2", "DescribeListeners", REGION, LoadBalancerArn=balancer))[
        "Listeners"
    ][0]
    await aws.call(
        "elbv2",
        "CreateRule",
        REGION,
        ListenerArn=listener["ListenerArn"],
        Priority=priority,
        Conditions=[{"Field": "path-pattern", "Values": [f"/{priority}/*"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": group}],
    )


async def move_service(aws: AwsClients, stack: DemoStack, group: str) -> None:
    await aws.call(
        "ecs",
        "UpdateService",
        REGION,
        cluster=stack.cluster,
        service=stack.service,
        loadBalancers=[{"targetGroupArn": group, "containerName": "web", "containerPort": 80}],
    )


def target_groups(h: Harness) -> list[str] | None:
    service = h.controller.snapshot().environments["demo"].facts.service
    return None if service is None else list(service.target_groups)


async def test_a_target_group_is_read_once_and_kept_across_passes(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    for _ in range(4):
        await h.controller.reconcile_once()
        h.clock.advance(timedelta(minutes=1))
    assert h.calls("DescribeTargetGroups") == 1
    assert h.calls("DescribeLoadBalancers") == 1
    assert target_groups(h) == [stack.target_group]


async def test_a_service_moved_to_a_new_target_group_has_it_read_at_once(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    await h.controller.reconcile_once()
    group = await new_target_group(seed_aws, "demo-tg-new", priority=7)
    await move_service(seed_aws, stack, group)
    await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 2
    assert target_groups(h) == [arn_resource(group, "targetgroup")]


async def test_a_target_group_not_yet_behind_a_load_balancer_is_read_every_pass(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    group = await new_target_group(seed_aws, "demo-tg-alone", priority=None)
    await move_service(seed_aws, stack, group)
    h = make_controller(desired(stack))
    first = await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=1))  # past the backoff of a failed environment
    second = await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 2
    assert "no load balancer" in second.decision("demo", "idle").reason
    assert "no load balancer" in first.decision("demo", "idle").reason
    balancer = (await seed_aws.call("elbv2", "DescribeLoadBalancers", REGION, Names=["demo-alb"]))[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    await attach(seed_aws, group, balancer, priority=9)
    h.clock.advance(timedelta(minutes=1))
    third = await h.controller.reconcile_once()
    assert "no load balancer" not in third.decision("demo", "idle").reason
    await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 3  # kept from the third pass on


async def test_a_kept_target_group_is_read_again_after_half_an_hour(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h = make_controller(desired(stack, after="2h"))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=14))
    await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 1
    h.clock.advance(timedelta(minutes=17))
    await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 2


async def test_a_service_that_may_be_scaled_to_zero_has_its_target_group_read_fresh(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    # its idle window closes: the metrics must come from the load balancer it is on now
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert h.calls("DescribeTargetGroups") == 2
    for _ in range(3):  # asleep: nothing to decide from its load balancer's metrics
        h.clock.advance(timedelta(minutes=1))
        await h.controller.reconcile_once()
    assert h.calls("DescribeTargetGroups") == 2
