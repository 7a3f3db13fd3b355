"""An ALB to switch: the demo stack's, with a host rule and a shared rule, an activator target
group, and where each route forwards now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from controller.core.aws import AwsClients
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import REGION


@dataclass(frozen=True)
class Alb:
    listener: str
    service_group: str
    activator_group: str
    other_group: str
    host_rule: str
    shared_rule: str


async def _group(aws: AwsClients, name: str, vpc: str) -> str:
    answer = await aws.call(
        "elbv2",
        "CreateTargetGroup",
        REGION,
        Name=name,
        Protocol="HTTP",
        Port=8081,
        VpcId=vpc,
        TargetType="ip",
    )
    return str(answer["TargetGroups"][0]["TargetGroupArn"])


@pytest.fixture
async def alb(seed_aws: AwsClients, stack: DemoStack) -> Alb:
    """The demo ALB with, besides its default action: a host rule forwarding (weighted) to
    the service, and a rule that shares its traffic with another target group."""
    groups = await seed_aws.call("elbv2", "DescribeTargetGroups", REGION, Names=["demo-tg-0"])
    service_group, vpc = (
        groups["TargetGroups"][0]["TargetGroupArn"],
        groups["TargetGroups"][0]["VpcId"],
    )
    activator = await _group(seed_aws, "activator", vpc)
    other = await _group(seed_aws, "other", vpc)
    lbs = await seed_aws.call("elbv2", "DescribeLoadBalancers", REGION, Names=["demo-alb"])
    listener = (
        await seed_aws.call(
            "elbv2",
            "DescribeListeners",
            REGION,
            LoadBalancerArn=lbs["LoadBalancers"][0]["LoadBalancerArn"],
        )
    )["Listeners"][0]["ListenerArn"]

    async def rule(priority: int, condition: dict[str, Any], groups: list[dict[str, Any]]) -> str:
        answer = await seed_aws.call(
            "elbv2",
            "CreateRule",
            REGION,
            ListenerArn=listener,
            Priority=priority,
            Conditions=[condition],
            Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}],
        )
        return str(answer["Rules"][0]["RuleArn"])

    host_rule = await rule(
        10,
        {"Field": "host-header", "HostHeaderConfig": {"Values": ["App.Example.com"]}},
        [{"TargetGroupArn": service_group, "Weight": 1}],
    )
    shared_rule = await rule(
        20,
        {"Field": "path-pattern", "Values": ["/shared/*"]},
        [{"TargetGroupArn": service_group, "Weight": 50}, {"TargetGroupArn": other, "Weight": 50}],
    )
    return Alb(listener, service_group, activator, other, host_rule, shared_rule)


async def forwards(aws: AwsClients, alb: Alb) -> dict[str, set[str]]:
    """Where each route forwards now, by name: default, host, shared."""
    listener = (await aws.call("elbv2", "DescribeListeners", REGION, ListenerArns=[alb.listener]))[
        "Listeners"
    ][0]
    rules = (await aws.call("elbv2", "DescribeRules", REGION, ListenerArn=alb.listener))["Rules"]
    by_arn = {r["RuleArn"]: r["Actions"] for r in rules}
    names = {
        alb.service_group: "service",
        alb.activator_group: "activator",
        alb.other_group: "other",
    }

    def groups(actions: list[dict[str, Any]]) -> set[str]:
        found = {a["TargetGroupArn"] for a in actions if "TargetGroupArn" in a}
        for a in actions:
            found |= {
                g["TargetGroupArn"] for g in a.get("ForwardConfig", {}).get("TargetGroups", [])
            }
        return {names[g] for g in found}

    return {
        "default": groups(listener["DefaultActions"]),
        "host": groups(by_arn[alb.host_rule]),
        "shared": groups(by_arn[alb.shared_rule]),
    }


def activator_settings(alb: Alb) -> dict[str, str]:
    return {"activator_addr": "127.0.0.1:0", "activator_target_group": alb.activator_group}
